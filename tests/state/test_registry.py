"""The registry file: malformed rows, upgrades, history, concurrent writers, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backend.errors import RegistryError
from backend.state.registry import COLUMNS, Registry, Stage, Status, Taxon
from backend.state.store import open_database

from ..conftest import SRC, cli_env

HEADER = ",".join(COLUMNS)
GOOD = "562,Escherichia coli,,,,,check,check ENA for runs,0,False"


def registry_at(path, **options):
    """A registry file with its database and JSON-lines history beside it."""
    return Registry(path, open_database(path.parent / "microfetch.sqlite"),
                    path.parent / "history.jsonl", **options)


def make_registry(tmp_path: Path) -> Registry:
    return registry_at(tmp_path / "microfetch.csv")


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("abc,,,,,,check,,0,False", "column taxonomy_id has 'abc'"),
        ("-3,,,,,,check,,0,False", "not positive"),
        ("1280,,,,,,shipping,,0,False", "column stage has 'shipping'"),
        ("1280,,,,done,,check,,0,False", "column last_run_status has 'done'"),
        ("1280,,yesterday,,,,check,,0,False", "column last_checked has 'yesterday'"),
        ("1280,,,,,,check,,high,False", "column priority has 'high'"),
        ("1280,,,,,,check,,0,maybe", "column generated_warning has 'maybe'"),
        ("1280,,,,,,check,,0", "has 9 fields but the header has 10"),
        (GOOD, "taxonomy_id 562 is already on line 2"),
    ],
)
def test_a_malformed_row_is_reported_with_its_line_and_the_file_is_never_overwritten(
    run_cli, workdir, bad_line, problem
):
    path = workdir / "microfetch.csv"
    original = f"{HEADER}\n{GOOD}\n{bad_line}\n"
    path.write_text(original)
    for args, kwargs in ((("status",), {}), (("--offline", "7"), {"add_taxa": True}),
                         (("priority", "562", "4"), {})):
        result = run_cli(*args, **kwargs)
        assert result.returncode == 2, result.stderr
        assert "microfetch.csv line 3: " in result.stderr
        assert problem in result.stderr
        assert "Fix or remove that line" in result.stderr
    assert path.read_text() == original


def test_an_older_registry_without_scientific_name_gains_the_newer_columns(run_cli, workdir):
    path = workdir / "microfetch.csv"
    path.write_text(
        "taxonomy_id,last_checked,droplet_ips,last_run_status,needs_attention,stage,priority\n"
        "562,2026-11-20T08:00:00Z,,complete,,check,2\n"
    )
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["scientific_name"] == ""
    assert row["generated_warning"] is False
    assert row["last_checked"] == "2026-11-20T08:00:00Z"
    assert row["last_run_status"] == "complete"
    assert row["priority"] == 2
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "562,,2026-11-20T08:00:00Z,,complete,,check,check ENA for runs,2,False"


def test_an_unknown_column_is_refused_rather_than_dropped(tmp_path):
    registry = make_registry(tmp_path)
    registry.path.write_text("taxonomy_id,colour\n562,red\n")
    with pytest.raises(RegistryError, match="unknown column"):
        registry.load()


def test_rows_round_trip_through_their_text_forms(tmp_path):
    registry = make_registry(tmp_path)
    registry.ensure_ready()
    with registry.transaction("tester") as table:
        table[562] = Taxon(562, "Escherichia coli", None, ("10.0.0.1", "10.0.0.2"),
                           Status.IN_PROGRESS, "look, here", Stage.WAIT, -1, True)
    (row,) = registry.load()
    assert row.droplet_ips == ("10.0.0.1", "10.0.0.2")
    assert row.needs_attention == "look, here"
    assert row.stage is Stage.WAIT
    assert row.last_run_status is Status.IN_PROGRESS
    assert row.generated_warning is True
    assert row.stage_name == "workers fetching"


def test_an_exception_inside_a_transaction_changes_nothing(tmp_path):
    registry = make_registry(tmp_path)
    registry.ensure_ready()
    with registry.transaction() as table:
        table[562] = Taxon(562)
    before = registry.path.read_bytes()
    with pytest.raises(RuntimeError), registry.transaction() as table:
        table[562].priority = 9
        raise RuntimeError("boom")
    assert registry.path.read_bytes() == before


def test_the_history_log_rotates_when_large(tmp_path):
    registry = registry_at(tmp_path / "microfetch.csv",
                        history_max_bytes=2000)
    registry.ensure_ready()
    with registry.transaction() as table:
        table[562] = Taxon(562)
    for priority in range(60):
        registry.update(562, priority=priority)
    assert (tmp_path / "history.jsonl.1").exists()
    assert (tmp_path / "history.jsonl").stat().st_size < 2000 + 500
    assert registry.history(562)[-1]["new"] == "59"


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from backend.state.registry import Registry, Taxon
    from backend.state.store import open_database
    path, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    registry = Registry(path, open_database(path.parent / "microfetch.sqlite"),
                        path.parent / "history.jsonl")
    for i in range(count):
        with registry.transaction(f"writer{worker}") as table:
            table.row(1).priority += 1
            table[1000 * (worker + 1) + i] = Taxon(1000 * (worker + 1) + i)
    """
)

READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from backend.state.registry import Registry
    from backend.state.store import open_database
    path, stop = Path(sys.argv[1]), Path(sys.argv[2])
    registry = Registry(path, open_database(path.parent / "microfetch.sqlite"))
    reads = 0
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        registry.load()  # raises on a torn or malformed file
        reads += 1
    print(reads)
    """
)


def test_four_processes_making_200_changes_each_lose_no_update(tmp_path):
    registry = make_registry(tmp_path)
    registry.ensure_ready()
    with registry.transaction() as table:
        table[1] = Taxon(1)
    env = cli_env(tmp_path, PYTHONPATH=str(SRC))
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(registry.path), str(stop)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(registry.path), str(n), "200"],
                         env=env, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 10  # the reader really read while the writers wrote

    rows = {row.taxonomy_id: row for row in registry.load()}
    assert rows[1].priority == 800
    assert len(rows) == 801
    history = registry.history(limit=10_000)
    assert sum(1 for e in history if e["taxon"] == 1 and e["field"] == "priority") == 800


CRASHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from backend.state.registry import Registry
    path = Path(sys.argv[1])
    registry = registry_at(path)
    i = 0
    while True:
        i += 1
        with registry.transaction() as table:
            for row in table.values():
                row.priority = i
                row.needs_attention = "x" * (i % 50)
        print(i, flush=True)
    """
)


def test_a_process_killed_while_writing_leaves_the_old_or_the_new_file(tmp_path):
    registry = make_registry(tmp_path)
    registry.ensure_ready()
    with registry.transaction() as table:
        for taxon_id in range(1, 3001):
            table[taxon_id] = Taxon(taxon_id, scientific_name=f"taxon number {taxon_id}")
    env = cli_env(tmp_path, PYTHONPATH=str(SRC))
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(registry.path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        rows = registry.load()
        assert len(rows) == 3000
        assert len({(row.priority, row.needs_attention) for row in rows}) == 1
