"""ENA's answers taken exactly: each way an answer was misread, against the stand-in.

An answer that cannot be trusted is refused whole (stored metadata and runs as they were, the
taxon in `warning`); an odd but valid one (a `"` in a field, a run listed twice, a header that
arrives in pieces, a count a little off) is read right.
"""

from __future__ import annotations

import csv
import json

import pytest

from backend.demo.ena_standin import REAL_HOST
from backend.ena.metadata import metadata_db
from backend.ena.parse_fetched_data import decide
from backend.settings import load_settings
from backend.state.accessions import AccessionList, RunStatus

FIRST, SECOND, THIRD = "ERR9000001", "ERR9000002", "ERR9000003"


def add_and_fetch(run_cli, env, taxon: str = "562") -> None:
    assert run_cli("--offline", taxon, add_taxa=True, env=env).returncode == 0
    result = run_cli("fetch", taxon, env=env)
    assert result.returncode == 0, result.stderr


def status(run_cli, env, taxon: int = 562) -> dict:
    return json.loads(run_cli("status", str(taxon), "--json", env=env).stdout)[0]


def stored(env, tmp_path, taxon: int = 562) -> tuple:
    """Everything a refused answer must leave alone: both exports and both tables."""
    settings = load_settings(env)
    files = tuple((tmp_path / "data" / folder / f"{taxon}.csv").read_bytes()
                  for folder in ("ENA_metadata", "ENA_accession_numbers"))
    runs = [run.to_sql(taxon) for run in AccessionList.of(settings, taxon).runs()]
    metadata = [tuple(row) for row in metadata_db(settings).query(
        "SELECT * FROM ena_metadata WHERE taxon = ? ORDER BY accession", (taxon,))]
    return files, runs, metadata


def metadata_rows(tmp_path, taxon: int = 562) -> dict[str, dict[str, str]]:
    with open(tmp_path / "data" / "ENA_metadata" / f"{taxon}.csv", newline="") as handle:
        return {row["run_accession"]: row for row in csv.DictReader(handle)}


def test_a_field_starting_with_a_quote_does_not_swallow_the_rows_after_it(
        run_cli, env, ena, make_run_in, tmp_path):
    ena.data.rows[562][0]["scientific_name"] = '"Escherichia coli'  # never closed
    make_run_in(562, "ERR9000004", updated="2026-01-10")
    add_and_fetch(run_cli, env)
    rows = metadata_rows(tmp_path)
    assert sorted(rows) == [FIRST, SECOND, THIRD, "ERR9000004"]
    assert rows[FIRST]["scientific_name"] == '"Escherichia coli'
    assert rows[SECOND]["scientific_name"] == "Escherichia coli"
    assert len(AccessionList.of(load_settings(env), 562).load()) == 4


def test_a_run_listed_twice_is_stored_once_from_its_latest_row_and_stays_fetched(
        run_cli, env, ena, tmp_path):
    rows = ena.data.rows[562]
    newer = rows[0] | {"last_updated": "2026-02-01", "fastq_md5": "a" * 32 + ";" + "b" * 32}
    older = rows[0] | {"last_updated": "2025-12-01", "fastq_md5": "c" * 32 + ";" + "d" * 32}
    rows[0] = newer
    rows.extend([older, dict(older)])  # the stale copies come after the newest one
    env = env | {"MICROFETCH_ENA_FULL_CHECK_DAYS": "0"}  # every check sees the duplicates
    assert run_cli("--offline", "562", add_taxa=True, env=env).returncode == 0

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 0, result.stderr
    assert f"warning: ENA listed 1 runs more than once ({FIRST})" in result.stdout
    assert "runs seen 3, new 3" in result.stdout
    assert metadata_rows(tmp_path)[FIRST]["last_updated"] == "2026-02-01"
    settings = load_settings(env)
    with AccessionList.of(settings, 562).edit([FIRST]) as runs:
        assert runs[FIRST].fastq_md5 == ("a" * 32, "b" * 32)
        runs[FIRST].status = RunStatus.FETCHED
    assert run_cli("fetch", "562", env=env).returncode == 0
    assert AccessionList.of(settings, 562).get([FIRST])[FIRST].status is RunStatus.FETCHED


def test_a_header_that_arrives_in_two_pieces_is_checked_whole(run_cli, env, ena, tmp_path):
    ena.fail("search", "split")
    add_and_fetch(run_cli, env)
    assert sorted(metadata_rows(tmp_path)) == [FIRST, SECOND, THIRD]


@pytest.mark.parametrize(("endpoint", "faults", "expected"), [
    ("search", ("utf8",), "is not UTF-8 (byte"),
    ("search", ("ragged",), "malformed row"),
    ("count", ("drift",) * 3, "3 times, more than MICROFETCH_ENA_COUNT_DRIFT allows"),
])
def test_an_answer_that_cannot_be_trusted_is_refused_and_stored_data_stays(
        run_cli, env, ena, make_run_in, tmp_path, endpoint, faults, expected):
    add_and_fetch(run_cli, env)
    before = stored(env, tmp_path)
    ena.data.rows[562][0]["base_count"] = "5"
    make_run_in(562, "ERR9000050", updated="2099-01-01")
    ena.data.rows[562][0]["last_updated"] = "2099-01-01"
    ena.fail(endpoint, *faults)

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 1
    assert expected in result.stderr
    assert stored(env, tmp_path) == before
    row = status(run_cli, env)
    assert (row["last_run_status"], row["generated_warning"]) == ("warning", True)


def test_an_answer_dribbling_a_byte_at_a_time_is_cut_off_at_its_deadline(
        run_cli, env, ena, tmp_path):
    # Each byte comes well within the 1 s read timeout: only the overall deadline ends it.
    env = env | {"MICROFETCH_ENA_TIMEOUT": "1", "MICROFETCH_ENA_RETRIES": "0"}
    assert run_cli("--offline", "562", add_taxa=True, env=env).returncode == 0
    ena.fail("search", "dribble")

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 1
    assert "took longer than its deadline" in result.stderr
    assert status(run_cli, env)["last_run_status"] == "warning"
    assert not (tmp_path / "data" / "ENA_metadata" / "562.csv").exists()


def test_a_count_a_little_off_is_taken_with_a_warning(run_cli, env, ena, tmp_path):
    env = env | {"MICROFETCH_ENA_COUNT_DRIFT": "0.5"}
    assert run_cli("--offline", "562", add_taxa=True, env=env).returncode == 0
    ena.fail("count", "drift")

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 0, result.stderr
    assert "warning: ENA sent 3 rows for 'tax_tree(562)' but counts 4" in result.stdout
    assert status(run_cli, env)["generated_warning"] is True


def test_a_count_off_beyond_the_drift_is_asked_for_again(run_cli, env, ena, tmp_path):
    assert run_cli("--offline", "562", add_taxa=True, env=env).returncode == 0
    ena.fail("count", "drift")

    result = run_cli("fetch", "562", env=env)

    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stdout
    assert len([r for r in ena.requests if r["path"].endswith("/search")]) == 2
    assert sorted(metadata_rows(tmp_path)) == [FIRST, SECOND, THIRD]


def test_accessions_with_other_scripts_digits_and_files_sharing_a_name_are_excluded(
        run_cli, env, ena, make_run_in, tmp_path):
    make_run_in(562, "ERR9000004", updated="2026-01-10")
    ena.data.rows[562][3]["run_accession"] = "ERR١٢٣٤٥٦٧"  # Arabic-Indic digits
    twins = ena.data.rows[562][1]
    path = f"{REAL_HOST}/vol1/fastq/ERR900/{SECOND}"
    twins["fastq_ftp"] = f"{path}/a/{SECOND}_1.fastq.gz;{path}/b/{SECOND}_1.fastq.gz"
    add_and_fetch(run_cli, env)
    runs = AccessionList.of(load_settings(env), 562).load()
    assert runs[SECOND].exclusion_reason == f"bad_path: two files are named '{SECOND}_1.fastq.gz'"
    bad = [run for run in runs.values() if run.exclusion_code == "bad_accession"]
    assert [run.accession for run in bad] == ["ERR???????"]
    assert runs[FIRST].wanted and runs[THIRD].wanted


def test_the_accession_check_is_ascii_and_whole():
    settings = load_settings({})
    row = {"run_accession": "ERR1234567", "instrument_platform": "ILLUMINA",
           "library_strategy": "WGS", "library_source": "GENOMIC", "library_layout": "PAIRED",
           "base_count": "100", "fastq_ftp": f"{REAL_HOST}/vol1/ERR1_1.fastq.gz",
           "fastq_md5": "a" * 32, "fastq_bytes": "10"}
    assert decide(row, settings).files is not None
    for accession in ("ERR1234567\n", "ERR١٢٣٤٥٦٧", "ERR1234567\u0660"):
        assert decide(row | {"run_accession": accession}, settings).exclusion.value == \
            "bad_accession", repr(accession)


def test_sizes_and_base_counts_in_other_digits_are_refused_not_a_crash():
    settings = load_settings({"MICROFETCH_MIN_BASES": "10"})
    row = {"run_accession": "ERR1234567", "instrument_platform": "ILLUMINA",
           "library_strategy": "WGS", "library_source": "GENOMIC", "library_layout": "PAIRED",
           "base_count": "100", "fastq_ftp": f"{REAL_HOST}/vol1/ERR1_1.fastq.gz",
           "fastq_md5": "a" * 32, "fastq_bytes": "10"}
    assert decide(row | {"fastq_bytes": "1²"}, settings).exclusion.value == "no_files"
    assert decide(row | {"base_count": "١٠٠"}, settings).exclusion.value == "min_bases"
