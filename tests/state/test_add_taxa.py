"""add_taxa.py and `microfetch add-taxa`, run as a user runs them."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from backend.state.registry import COLUMNS

from ..conftest import cli_env


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_it_adds_new_ids_with_stage_check_and_prints_a_line_each(run_cli, workdir):
    result = run_cli("--offline", "562", "1280", add_taxa=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "added 562", "added 1280", "2 added, 0 already present, 0 rejected",
    ]
    rows = read_rows(workdir / "microfetch.csv")
    assert [r["taxonomy_id"] for r in rows] == ["562", "1280"]
    assert rows[0]["stage"] == "check"
    assert rows[0]["stage_name"] == "check ENA for runs"
    assert rows[0]["last_run_status"] == ""
    assert rows[0]["priority"] == "0"
    assert rows[0]["generated_warning"] == "False"
    header = (workdir / "microfetch.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)


def test_it_reports_ids_already_present_and_exits_zero(run_cli):
    run_cli("--offline", "562", add_taxa=True)
    result = run_cli("--offline", "562", "1280", add_taxa=True)
    assert result.returncode == 0
    assert "already present 562" in result.stdout
    assert "1 added, 1 already present, 0 rejected" in result.stdout


def test_it_rejects_bad_ids_with_reasons_and_still_adds_the_valid_ones(run_cli, workdir):
    result = run_cli("--offline", "562", "-5", "0", "abc", "2147483648", "", "1.5", "2147483647",
                     add_taxa=True)
    assert result.returncode == 2
    for bad in ("'-5'", "'0'", "'abc'", "'2147483648'", "''", "'1.5'"):
        assert f"rejected {bad}" in result.stderr
    assert "not positive" in result.stderr
    assert "larger than 2147483647" in result.stderr
    assert "2 added, 0 already present, 6 rejected" in result.stdout
    assert [r["taxonomy_id"] for r in read_rows(workdir / "microfetch.csv")] == [
        "562", "2147483647",
    ]


def test_an_id_that_looks_like_an_option_is_rejected_not_taken_as_a_flag(run_cli, workdir):
    result = run_cli("--offline", "-5", "--bogus", "7", add_taxa=True)
    assert result.returncode == 2
    assert "rejected '-5'" in result.stderr
    assert "rejected '--bogus'" in result.stderr
    assert [r["taxonomy_id"] for r in read_rows(workdir / "microfetch.csv")] == ["7"]


def test_an_id_given_twice_in_one_call_is_handled_once(run_cli, workdir):
    result = run_cli("--offline", "562", "562", "0562", add_taxa=True)
    assert result.returncode == 0
    assert result.stdout.count("added 562") == 1
    assert "1 added" in result.stdout
    assert len(read_rows(workdir / "microfetch.csv")) == 1


def test_priority_option_sets_the_priority_of_new_taxa(run_cli, workdir):
    result = run_cli("add-taxa", "--offline", "--priority", "5", "562")
    assert result.returncode == 0, result.stderr
    assert read_rows(workdir / "microfetch.csv")[0]["priority"] == "5"


def test_no_ids_is_a_usage_error(run_cli):
    result = run_cli("--offline", add_taxa=True)
    assert result.returncode == 2
    assert "no taxonomy ids given" in result.stderr


def test_every_addition_is_in_the_history_with_the_os_user(run_cli, workdir):
    import getpass
    import json

    run_cli("--offline", "562", add_taxa=True)
    lines = (workdir / "data" / "history.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["taxon"] == 562
    assert entry["field"] == "row"
    assert entry["old"] is None
    assert entry["new"]["stage"] == "check"
    assert entry["actor"] == getpass.getuser()
    assert entry["time"].endswith("Z")


def test_the_installed_add_taxa_script_runs_from_a_shell(tmp_path):
    script = shutil.which("add_taxa.py") or str(Path(sys.executable).parent / "add_taxa.py")
    result = subprocess.run(
        [script, "--offline", "562", "1280"], env=cli_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "2 added" in result.stdout


def test_add_taxa_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys; from backend.cli.main import add_taxa_main; "
        "rc = add_taxa_main(['--offline', '562']); "
        "heavy = [m for m in ('pandas', 'flask', 'paramiko', 'digitalocean', 'apscheduler') "
        "if m in sys.modules]; print(heavy); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
