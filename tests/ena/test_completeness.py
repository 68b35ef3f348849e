"""Completeness over time: runs that gain files later, runs ENA drops, rechecks that cost what
changed."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

from backend.ena.metadata import metadata_db
from backend.settings import load_settings
from backend.state.accessions import AccessionList, RunStatus

FIRST, SECOND, THIRD = "ERR9000001", "ERR9000002", "ERR9000003"


def fetch(run_cli, env) -> str:
    result = run_cli("fetch", "562", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def add(run_cli, env) -> None:
    assert run_cli("--offline", "562", add_taxa=True, env=env).returncode == 0


def test_a_run_without_files_is_asked_about_again_and_selected_once_ena_lists_them(
        run_cli, env, ena):
    env = env | {"MICROFETCH_ENA_NO_FILES_RECHECK_DAYS": "0"}
    row = ena.data.rows[562][0]
    files = {key: row[key] for key in ("fastq_ftp", "fastq_md5", "fastq_bytes")}
    row.update(fastq_ftp="", fastq_md5="", fastq_bytes="")
    add(run_cli, env)
    fetch(run_cli, env)
    settings = load_settings(env)
    assert AccessionList.of(settings, 562).get([FIRST])[FIRST].exclusion_code == "no_files"
    row.update(files)  # ENA adds the files; last_updated stays as it was
    ena.requests.clear()

    stdout = fetch(run_cli, env)

    queries = [r["params"]["query"] for r in ena.requests if r["path"].endswith("/search")]
    assert f"run_accession={FIRST}" in queries
    run = AccessionList.of(settings, 562).get([FIRST])[FIRST]
    assert (run.wanted, run.status, run.category) == (True, RunStatus.PENDING, "pending")
    assert run.fastq_md5 == tuple(files["fastq_md5"].split(";"))
    assert "selected 3, excluded 0" in stdout


def test_runs_ena_no_longer_lists_become_withdrawn_and_leave_the_samplesheet(
        run_cli, env, ena, tmp_path):
    env = env | {"MICROFETCH_ENA_FULL_CHECK_DAYS": "0"}
    add(run_cli, env)
    fetch(run_cli, env)
    settings = load_settings(env)
    kept = tmp_path / "data" / "genomes" / "562" / FIRST / f"{FIRST}_1.fastq.gz"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"reads")
    with AccessionList.of(settings, 562).edit([FIRST, THIRD]) as runs:
        for accession in (FIRST, THIRD):
            runs[accession].status = RunStatus.FETCHED
            runs[accession].fetched_at = datetime(2026, 1, 1, tzinfo=UTC)
    dropped = ena.data.rows[562].pop(0), ena.data.rows[562].pop(0)  # FIRST and SECOND

    stdout = fetch(run_cli, env)

    assert "selected 1, excluded 0, withdrawn 2" in stdout
    runs = AccessionList.of(settings, 562).load()
    assert [runs[a].category for a in (FIRST, SECOND, THIRD)] == ["withdrawn", "withdrawn",
                                                                   "fetched"]
    assert runs[FIRST].exclusion_reason == "withdrawn: ENA no longer lists this run"
    assert runs[FIRST].status is RunStatus.FETCHED and kept.read_bytes() == b"reads"
    with open(tmp_path / "data" / "genomes" / "562" / "samplesheet.csv") as handle:
        assert [r["sample"] for r in csv.DictReader(handle)] == [THIRD]
    counts = AccessionList.of(settings, 562).counts()
    assert (counts["withdrawn"]["runs"], counts["fetched"]["runs"]) == (2, 1)

    ena.data.rows[562].insert(0, dropped[0])  # ENA lists it again
    assert "selected 2, excluded 0, withdrawn 1" in fetch(run_cli, env)
    assert AccessionList.of(settings, 562).get([FIRST])[FIRST].category == "fetched"


def test_an_incremental_recheck_decides_only_what_changed(run_cli, env, ena, make_run_in):
    add(run_cli, env)
    fetch(run_cli, env)
    settings = load_settings(env)
    untouched = metadata_db(settings).query(
        "SELECT accession, gen FROM ena_metadata WHERE accession IN (?, ?)", (SECOND, THIRD))
    ena.data.rows[562][0].update(library_strategy="AMPLICON", last_updated="2099-01-01")
    make_run_in(562, "ERR9000004", updated="2099-01-01")

    stdout = fetch(run_cli, env)

    assert "runs seen 2, new 1, changed 1, stored 4" in stdout
    assert "decided 2 new or changed runs" in stdout
    assert metadata_db(settings).query(
        "SELECT accession, gen FROM ena_metadata WHERE accession IN (?, ?)",
        (SECOND, THIRD)) == untouched
    runs = AccessionList.of(settings, 562).load()
    assert runs[FIRST].exclusion_reason == "strategy: AMPLICON is not WGS"
    assert runs["ERR9000004"].wanted


def test_changed_selection_rules_decide_every_run_again(run_cli, env, ena):
    add(run_cli, env)
    fetch(run_cli, env)
    stdout = fetch(run_cli, env | {"MICROFETCH_SELECT_LAYOUTS": "SINGLE"})
    assert "decided 3 new or changed runs" in stdout
    assert "excluded layout: 3" in stdout
