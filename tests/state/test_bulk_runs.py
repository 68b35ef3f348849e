"""A taxon's first runs written in bulk, and the accession export read from the stored text:
the same rows, counts and file as one run at a time."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime

import pytest

from backend.settings import load_settings
from backend.state import accessions
from backend.state.accessions import COLUMNS, AccessionList, Exclusion, Run, RunStatus


def accession_list(tmp_path, taxon: int = 562) -> AccessionList:
    return AccessionList.of(load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data")}), taxon)


def new_row(run: Run, taxon: int = 562) -> tuple:
    values = dict(zip(("taxon", "accession", "is_excluded", "droplet_ip", "exclusion_reason",
                       "status", "worker", "fastq_files", "fastq_bytes", "fastq_md5",
                       "total_bytes", "attempts", "last_error", "fetched_at", "category"),
                      run.to_sql(taxon), strict=False))
    return tuple(values[c] for c in ("taxon", "accession", "is_excluded", "exclusion_reason",
                                     "fastq_files", "fastq_bytes", "fastq_md5", "total_bytes",
                                     "category"))


def some_runs(prefix: str) -> list[Run]:
    runs = []
    for n in range(6):
        run = Run(f"{prefix}{n}", fastq_files=(f"h/{prefix}{n}_1.fastq.gz",), fastq_bytes=(n,),
                  fastq_md5=("a" * 32,))
        if n % 3 == 1:
            run.exclude(Exclusion.PLATFORM, "PACBIO_SMRT is not ILLUMINA")
        if n % 3 == 2:
            run.exclude(Exclusion.WITHDRAWN, "ENA no longer lists this run")
        runs.append(run)
    return runs


def test_runs_inserted_in_bulk_are_counted_as_one_at_a_time_and_the_trigger_stays(tmp_path):
    bulk, single = accession_list(tmp_path, 562), accession_list(tmp_path, 563)
    bulk.save(some_runs("ERR1"))
    single.save(some_runs("ERR1"))
    bulk.insert_new([new_row(run) for run in some_runs("ERR2")])
    single.save(some_runs("ERR2"))

    assert bulk.counts() == single.counts()
    assert {a: r.to_sql(0) for a, r in bulk.load().items()} == \
        {a: r.to_sql(0) for a, r in single.load().items()}
    bulk.save([Run("ERR3")])  # counted by the trigger again
    assert bulk.counts()["pending"]["runs"] == single.counts()["pending"]["runs"] + 1


def test_a_bulk_insert_of_a_stored_run_writes_nothing(tmp_path):
    runs = accession_list(tmp_path)
    runs.save(some_runs("ERR1")[:1])
    before = runs.counts()
    with pytest.raises(sqlite3.IntegrityError):
        runs.insert_new([new_row(run) for run in some_runs("ERR1")])
    assert runs.counts() == before
    assert list(runs.load()) == ["ERR10"]
    assert runs.db.query("SELECT 1 FROM sqlite_master WHERE name = 'runs_counted_in'")


@pytest.mark.parametrize("page", [1, 2, 1000])
def test_the_export_is_what_each_run_would_write(tmp_path, monkeypatch, page):
    monkeypatch.setattr(accessions, "EXPORT_BATCH", page)  # plain pages and long-way pages
    runs = accession_list(tmp_path)
    runs.save(some_runs("ERR0"))
    fetched = Run("ERR2", fastq_files=("h/a_1.fastq.gz", "h/a,2.fq"), fastq_bytes=(5, 0),
                  fastq_md5=("x" * 32, "y" * 32), status=RunStatus.FETCHED,
                  fetched_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), contigs=5, n50=0,
                  assembly_status="assembled", attempts=3, last_error='say "hi"\nthere')
    runs.save([Run("ERR1"), fetched, Run("ERR3", worker="w1", droplet_ip="1.2.3.4",
                                         status=RunStatus.ASSIGNED), *some_runs("ERR4"),
               Run("ERR6", fastq_files=("h/b.fq",), fastq_bytes=(0,), fastq_md5=("z" * 32,),
                   status=RunStatus.FETCHED, fetched_at=datetime(2026, 1, 2, tzinfo=UTC),
                   contigs=12, total_length=3, n50=1, assembly_path="ERR6/x.fa.gz"),
               Run("ERR7", last_error="a\x00b"), Run("ERR8", worker="w\x1f2")])
    with runs.db.write() as con:  # stored otherwise than Run writes it: read through a Run
        con.execute("INSERT INTO runs (taxon, accession, fastq_files, fastq_bytes, fastq_md5, "
                    "fetched_at) VALUES (562, 'ERR5', 'a;;b;', '007;1', ';m', "
                    "'2026-01-02T03:04:05+00:00')")
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(run.to_text() for run in runs.runs())

    with open(runs.export(), newline="") as handle:
        assert handle.read() == expected.getvalue()
