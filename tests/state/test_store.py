"""The state database: upgrade in place from the CSV/JSON data directory, history that never
diverges from the registry, and wrong-typed values refused before they reach a file."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.errors import UsageError
from backend.state.accessions import COLUMNS, Exclusion, Run, RunStatus
from backend.state.registry import Registry, Taxon
from backend.state.store import open_database
from backend.state.workers import Phase, WorkerRecord, token_hash
from backend.timeutil import utc_now

from ..conftest import SRC, cli_env


def legacy_data_dir(tmp_path: Path, runs: int = 3) -> Path:
    """A data directory as the release before the database wrote it."""
    data = tmp_path / "data"
    lists = data / "ENA_accession_numbers"
    lists.mkdir(parents=True)
    with open(lists / "562.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for n in range(runs):
            run = Run(f"ERR{n:07d}", fastq_files=(f"ftp.sra.ebi.ac.uk/x/ERR{n:07d}_1.fastq.gz",),
                      fastq_bytes=(100 + n,), fastq_md5=("a" * 32,))
            if n == 0:
                run.status, run.fetched_at = RunStatus.FETCHED, utc_now()
            if n == 1:
                run.exclude(Exclusion.PLATFORM, "PACBIO_SMRT is not ILLUMINA")
            writer.writerow(run.to_text())
    (data / "workers").mkdir()
    record = WorkerRecord(name="mf-562-0-abcdef", backend="local", taxon_id=562, chunk=0,
                          runs=["ERR0000002"], bytes=102, token_sha256=token_hash("t"),
                          created_at=utc_now(), phase=Phase.RUNNING)
    (data / "workers" / "mf-562-0-abcdef.json").write_text(json.dumps(record.to_json()))
    lines = [{"time": "2026-01-01T00:00:00Z", "taxon": 562, "field": "priority", "old": "0",
              "new": "5", "actor": "alice"}]
    (data / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "microfetch.csv").write_text(
        "taxonomy_id,scientific_name\n562,Escherichia coli\n")
    return data


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from backend.cli.main import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def test_the_first_command_imports_a_data_directory_from_before_the_database(tmp_path):
    data = legacy_data_dir(tmp_path)

    assert cli(tmp_path, "status").returncode == 0  # any command will do

    history = json.loads(cli(tmp_path, "history", "562", "--json").stdout)
    assert [(h["field"], h["new"], h["actor"]) for h in history] == [("priority", "5", "alice")]
    workers = json.loads(cli(tmp_path, "workers", "--json").stdout)
    assert [(w["name"], w["runs"]) for w in workers] == [("mf-562-0-abcdef", ["ERR0000002"])]
    assert not (data / "workers" / "mf-562-0-abcdef.json").exists()
    assert (data / "workers" / "mf-562-0-abcdef.json.imported").exists()
    runs = _runs_in(data)
    assert runs == {"ERR0000000": "fetched", "ERR0000001": "excluded", "ERR0000002": "pending"}

    assert cli(tmp_path, "status").returncode == 0  # a second command imports nothing again
    assert len(json.loads(cli(tmp_path, "history", "--json").stdout)) == 1


def _runs_in(data: Path) -> dict[str, str]:
    db = data / "microfetch.sqlite"
    code = ("import sqlite3, sys, json; con = sqlite3.connect(sys.argv[1]); print(json.dumps("
            "dict(con.execute('SELECT accession, category FROM runs ORDER BY seq'))))")
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return json.loads(out)


def test_an_import_killed_halfway_leaves_nothing_and_runs_whole_next_time(tmp_path):
    data = legacy_data_dir(tmp_path, runs=200_000)
    env = cli_env(tmp_path, PYTHONPATH=str(SRC))
    code = "import sys; from backend.cli.main import main; sys.exit(main(['status']))"
    first = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wal = data / "microfetch.sqlite-wal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        if wal.exists() and wal.stat().st_size > 1_000_000:  # the import is writing
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    assert cli(tmp_path, "status").returncode == 0
    runs = _runs_in(data)
    assert len(runs) == 200_000
    assert runs["ERR0000000"] == "fetched" and runs["ERR0199999"] == "pending"
    assert len(json.loads(cli(tmp_path, "history", "--json").stdout)) == 1


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "microfetch.csv", open_database(tmp_path / "db.sqlite"))
    registry.ensure_ready()
    with registry.transaction("test") as table:
        table[562] = Taxon(562)
    return registry


@pytest.mark.parametrize("field, value", [
    ("priority", True), ("priority", "5"), ("priority", 1e23), ("priority", 10**30),
    ("generated_warning", "yes"), ("needs_attention", None), ("scientific_name", 5),
])
def test_a_wrong_typed_value_is_refused_and_changes_nothing(registry, field, value):
    before = registry.path.read_bytes()
    history = registry.history(562)
    with pytest.raises(UsageError, match=field):
        registry.update(562, "test", **{field: value})
    assert registry.path.read_bytes() == before
    assert registry.history(562) == history
    registry.load()  # still readable


def test_history_of_a_write_that_never_reached_the_file_is_dropped(registry):
    registry._insert([{"taxon": 562, "field": "priority", "old": "0", "new": "7"}], "crashed",
                     batch="0" * 64)  # a crash after the history, before the rename
    registry.update(562, "test", priority=1)
    assert [(h["new"], h["actor"]) for h in registry.history(562)][-1:] == [("1", "test")]
    assert "crashed" not in {h["actor"] for h in registry.history(562)}


def test_history_of_a_write_that_reached_the_file_is_kept(registry):
    import hashlib

    with registry.transaction("test") as table:  # what the file will be after the write
        table[562].priority = 7
    text = registry.path.read_bytes()
    registry._insert([{"taxon": 562, "field": "priority", "old": "0", "new": "7"}], "crashed",
                     batch=hashlib.sha256(text).hexdigest())  # crash before the mark cleared
    registry.update(562, "test", priority=8)
    actors = [h["actor"] for h in registry.history(562)]
    assert "crashed" in actors and actors[-1] == "test"


def test_records_of_workers_destroyed_a_week_ago_are_pruned_and_live_ones_kept(tmp_path):
    from datetime import timedelta

    from backend.state.workers import WorkerStore

    store = WorkerStore(open_database(tmp_path / "db.sqlite"))
    for n, phase in enumerate((Phase.DESTROYED, Phase.RUNNING)):
        store.save(WorkerRecord(name=f"mf-562-{n}-abcdef", backend="local", taxon_id=562,
                                chunk=n, runs=[], bytes=0, token_sha256="", phase=phase,
                                created_at=utc_now()))
    assert store.prune(timedelta(days=7)) == 0  # destroyed just now: kept for the pages
    assert store.prune(timedelta(days=7), utc_now() + timedelta(days=8)) == 1
    assert [r.name for r in store.all()] == ["mf-562-1-abcdef"]
