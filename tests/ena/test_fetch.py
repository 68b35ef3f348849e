"""`microfetch fetch` and add_taxa.py against the ENA stand-in."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

from backend.demo.ena_standin import REAL_HOST, make_run
from backend.ena.parse_fetched_data import choose_files, decide
from backend.settings import load_settings
from backend.state.accessions import AccessionList, RunStatus


def add(run_cli, env, *ids: str):
    result = run_cli("--offline", *ids, add_taxa=True, env=env)
    assert result.returncode == 0, result.stderr


def accession_rows(tmp_path, taxon: int) -> dict[str, dict[str, str]]:
    with open(tmp_path / "data" / "ENA_accession_numbers" / f"{taxon}.csv") as handle:
        return {r["run_accession_number"]: r for r in csv.DictReader(handle)}


def status(run_cli, env, taxon: int) -> dict:
    return json.loads(run_cli("status", str(taxon), "--json", env=env).stdout)[0]


def test_the_real_lactobacillus_answer_is_fetched_and_filtered(run_cli, env, tmp_path):
    add(run_cli, env, "1578")
    result = run_cli("fetch", "1578", env=env)
    assert result.returncode == 0, result.stderr
    assert "runs seen 2030, new 2030, changed 0, stored 2030" in result.stdout
    rows = accession_rows(tmp_path, 1578)
    assert len(rows) == 2030
    selected = [r for r in rows.values() if r["excluded"] == "False"]
    assert f"selected {len(selected)}," in result.stdout
    assert selected and all(r["exclusion_reason"] == "" for r in selected)
    codes = {r["exclusion_reason"].split(":")[0] for r in rows.values() if r["excluded"] == "True"}
    assert {"platform", "strategy", "layout"} <= codes
    assert "excluded platform:" in result.stdout
    pacbio = [r for r in rows.values() if "PACBIO_SMRT is not ILLUMINA" in r["exclusion_reason"]]
    assert len(pacbio) == 88
    assert all(r["fastq_md5"].count(";") == r["fastq_files"].count(";") for r in selected)
    row = status(run_cli, env, 1578)
    assert row["stage"] == "dispatch" and row["last_checked"]


def test_an_id_not_in_the_registry_exits_2(run_cli, env):
    result = run_cli("fetch", "4242", env=env)
    assert result.returncode == 2
    assert "add_taxa.py 4242" in result.stderr


def test_a_second_check_asks_only_for_recent_changes_and_merges(run_cli, env, ena, tmp_path):
    add(run_cli, env, "562")
    assert run_cli("fetch", "562", env=env).returncode == 0
    checked = datetime.fromisoformat(status(run_cli, env, 562)["last_checked"].replace("Z", ""))
    changed = ena.data.rows[562][0]
    changed["base_count"], changed["last_updated"] = "999999", "2099-01-01"
    make_run(ena.data, 562, "ERR9000099", updated="2099-01-01")
    ena.requests.clear()

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 0, result.stderr
    day = (checked - timedelta(days=1)).date().isoformat()
    queries = {r["params"].get("query") for r in ena.requests if "query" in r["params"]}
    assert queries == {f"tax_tree(562) AND last_updated>={day}"}
    assert "runs seen 2, new 1, changed 1, stored 4" in result.stdout
    with open(tmp_path / "data" / "ENA_metadata" / "562.csv") as handle:
        stored = list(csv.DictReader(handle))
    assert len(stored) == len({r["run_accession"] for r in stored}) == 4
    assert next(r for r in stored if r["run_accession"] == changed["run_accession"])[
        "base_count"] == "999999"


def test_on_any_ena_failure_stored_files_stay_byte_for_byte(run_cli, env, ena, tmp_path):
    add(run_cli, env, "562")
    assert run_cli("fetch", "562", env=env).returncode == 0
    files = [tmp_path / "data" / "ENA_metadata" / "562.csv",
             tmp_path / "data" / "ENA_accession_numbers" / "562.csv"]
    before = [f.read_bytes() for f in files]
    make_run(ena.data, 562, "ERR9000050", updated="2099-01-01")
    for faults, expected in ((("500", "500"), "after 2 tries (HTTP 500)"),
                             (("html",), "HTML page"),
                             (("truncate",), "cut short")):
        ena.fail("search", *faults)
        result = run_cli("fetch", "562", env=env)
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr
        assert [f.read_bytes() for f in files] == before
    row = status(run_cli, env, 562)
    assert row["last_run_status"] == "warning"
    assert row["needs_attention"] == ""  # failures of ENA park nothing, however many


def test_a_failure_gives_a_warning_and_success_clears_the_count(run_cli, env, ena):
    add(run_cli, env, "562")
    ena.fail("count", "500", "500")
    assert run_cli("fetch", "562", env=env).returncode == 1
    row = status(run_cli, env, 562)
    assert (row["last_run_status"], row["generated_warning"]) == ("warning", True)
    assert run_cli("fetch", "562", env=env).returncode == 0
    ena.fail("count", "500", "500")
    assert run_cli("fetch", "562", env=env).returncode == 1
    assert status(run_cli, env, 562)["needs_attention"] == ""


def test_a_run_under_two_overlapping_taxa_is_fetched_once(run_cli, env, tmp_path):
    add(run_cli, env, "561", "562")
    assert run_cli("fetch", "561", env=env).returncode == 0
    result = run_cli("fetch", "562", env=env)
    assert result.returncode == 0
    assert "excluded duplicate: 3" in result.stdout
    rows = accession_rows(tmp_path, 562)
    assert {r["exclusion_reason"] for r in rows.values()} == {"duplicate: selected under taxon 561"}


def test_three_file_runs_keep_the_pair_with_its_own_md5_and_size():
    decision = choose_files(
        "h/ERR1/ERR1.fastq.gz;h/ERR1/ERR1_1.fastq.gz;h/ERR1/ERR1_2.fastq.gz;",
        "a" * 32 + ";" + "b" * 32 + ";" + "c" * 32 + ";", "10;20;30;")
    assert decision.files.paths == ("h/ERR1/ERR1_1.fastq.gz", "h/ERR1/ERR1_2.fastq.gz")
    assert decision.files.md5s == ("b" * 32, "c" * 32)
    assert decision.files.sizes == (20, 30)


def test_empty_lists_and_missing_md5s_are_excluded_with_their_codes():
    assert choose_files("", "", "").exclusion.value == "no_files"
    assert choose_files(";", ";", ";").exclusion.value == "no_files"
    assert choose_files("h/a_1.fastq.gz;h/a_2.fastq.gz", "a" * 32 + ";", "1;2")\
        .exclusion.value == "no_md5"


def good_row(**changes: str) -> dict[str, str]:
    row = {"run_accession": "ERR1234567", "instrument_platform": "ILLUMINA",
           "library_strategy": "WGS", "library_source": "GENOMIC", "library_layout": "PAIRED",
           "base_count": "100", "fastq_ftp": f"{REAL_HOST}/vol1/ERR1_1.fastq.gz",
           "fastq_md5": "a" * 32, "fastq_bytes": "10"}
    return row | changes


def test_bad_accessions_paths_and_hosts_are_excluded_before_anything_uses_them():
    settings = load_settings({})
    cases = {
        "bad_accession": good_row(run_accession="ERR1; rm -rf /"),
        "bad_path": good_row(fastq_ftp=f"{REAL_HOST}/vol1/../../etc/passwd"),
        "host_not_allowed": good_row(fastq_ftp="evil.example.org/vol1/ERR1_1.fastq.gz"),
        "min_bases": good_row(base_count="5"),
    }
    strict = load_settings({"MICROFETCH_MIN_BASES": "50"})
    for code, row in cases.items():
        decision = decide(row, strict if code == "min_bases" else settings)
        assert decision.exclusion is not None and decision.exclusion.value == code, code
    assert decide(good_row(), settings).files is not None
    assert decide(good_row(fastq_ftp="http://ftp.sra.ebi.ac.uk/x_1.fastq.gz"), settings)\
        .exclusion.value == "bad_path"


def test_refiltering_keeps_assignments_and_refetches_runs_whose_md5_changed(
        run_cli, env, ena, tmp_path):
    add(run_cli, env, "562")
    assert run_cli("fetch", "562", env=env).returncode == 0
    settings = load_settings(env)
    first, second, third = sorted(AccessionList.of(settings, 562).load())
    with AccessionList.of(settings, 562).edit() as runs:
        runs[first].status, runs[first].worker = RunStatus.ASSIGNED, "mf-562-0-aaaaaa"
        runs[second].status = RunStatus.FETCHED
        runs[second].fetched_at = datetime(2026, 1, 1, tzinfo=UTC)
    old_md5 = ena.data.rows[562][1]["fastq_md5"]
    for row in ena.data.rows[562]:
        row["fastq_md5"] = ";".join(["f" * 32, "e" * 32])
        row["last_updated"] = "2099-01-01"

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 0, result.stderr
    runs = AccessionList.of(settings, 562).load()
    assert (runs[first].status, runs[first].worker) == (RunStatus.ASSIGNED, "mf-562-0-aaaaaa")
    assert runs[second].status is RunStatus.PENDING
    assert runs[second].last_error == f"MD5 changed at ENA (was {old_md5})"
    assert runs[third].fastq_md5 == ("f" * 32, "e" * 32)
    assert "1 fetched runs changed at ENA" in result.stdout


def test_add_taxa_looks_names_up_and_rejects_ids_ena_does_not_know(run_cli, env, tmp_path):
    result = run_cli("562", "999999", add_taxa=True, env=env)
    assert result.returncode == 2
    assert "added 562 (Escherichia coli)" in result.stdout
    assert "rejected '999999': ENA's taxonomy does not know 999999" in result.stderr
    assert status(run_cli, env, 562)["scientific_name"] == "Escherichia coli"


def test_add_taxa_adds_without_a_name_when_ena_is_unreachable(run_cli, env, tmp_path):
    env = env | {"MICROFETCH_ENA_TAXONOMY_URL": "http://127.0.0.1:9/ena/taxonomy/rest",
                 "MICROFETCH_ENA_RETRIES": "0"}
    result = run_cli("562", add_taxa=True, env=env)
    assert result.returncode == 0
    assert "added 562; warning: name not checked" in result.stdout


def test_add_taxa_offline_does_not_ask_ena(run_cli, env, ena):
    result = run_cli("--offline", "562", add_taxa=True, env=env)
    assert result.returncode == 0
    assert not [r for r in ena.requests if "taxonomy" in r["path"]]
