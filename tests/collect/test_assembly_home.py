"""Bringing assemblies home: contigs verified by the worker's MD5, reads only where kept,
assemblies.tsv and the accession list's assembly columns."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json

from backend.collection.collect import Collector
from backend.state.accessions import RunStatus
from backend.state.exports import export_taxon
from backend.state.workers import Phase

from .conftest import TAXON

CONTIGS = gzip.compress(b">ERR0000001_1\nACGTACGTACGTACGT\n", mtime=0)


def assembly_output(lab, record, contents, failed: tuple[str, ...] = ()) -> None:
    """Turn a finished reads worker into one that assembled: reports, contigs, reads gone."""
    out = lab.backend.folder(record) / "out"
    for acc in contents:
        report = {"run": acc, "status": "failed" if acc in failed else "assembled",
                  "error": "skesa exited with 1:\nnot enough reads" if acc in failed else "",
                  "contigs": None if acc in failed else 1,
                  "total_length": None if acc in failed else 16,
                  "n50": None if acc in failed else 16, "largest_contig": 16, "gc": 0.5,
                  "depth": 30.0, "reads_in": 100, "bases_in": 480, "assembler": "skesa",
                  "contigs_md5": None if acc in failed else hashlib.md5(CONTIGS).hexdigest()}
        (out / acc / f"{acc}.assembly.json").write_text(json.dumps(report))
        if acc not in failed:
            (out / acc / f"{acc}.contigs.fa.gz").write_bytes(CONTIGS)
            for name in contents[acc]:
                (out / acc / name).unlink()  # assembled: the reads stay on the worker
    with lab.store.edit(record.name) as current:
        current.extra["products"] = "assembly"


def test_an_assembled_run_brings_home_its_contigs_and_a_failed_one_its_reads(lab):
    contents = lab.add_runs("ERR0000001", "ERR0000002")
    record = lab.finished_worker(contents)
    assembly_output(lab, record, contents, failed=("ERR0000002",))
    settings = lab.settings.with_overrides(worker_products="assembly")

    report = Collector(settings, lab.backend, lab.registry, lab.store).collect()
    export_taxon(settings, TAXON)

    assert report.collected == [record.name]
    runs = lab.accessions.load()
    assembled, failed = runs["ERR0000001"], runs["ERR0000002"]
    assert assembled.status is RunStatus.FETCHED and assembled.assembly_status == "assembled"
    assert (assembled.contigs, assembled.total_length, assembled.n50) == (1, 16, 16)
    assert assembled.assembly_md5 == hashlib.md5(CONTIGS).hexdigest()
    assert (lab.genomes() / assembled.assembly_path).read_bytes() == CONTIGS
    assert not list((lab.genomes() / "ERR0000001").glob("*.fastq.gz"))
    assert failed.status is RunStatus.FETCHED and failed.attempts == 0  # not a fetch failure
    assert failed.assembly_status == "failed"
    assert failed.assembly_error == "skesa exited with 1: not enough reads"
    for name, data in contents["ERR0000002"].items():
        assert (lab.genomes() / "ERR0000002" / name).read_bytes() == data
    sheet = (lab.genomes() / "samplesheet.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in sheet[1:]] == ["ERR0000002"]  # reads at home only
    with open(lab.genomes() / "assemblies.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [(r["run"], r["total_length"], r["n50"], r["depth"]) for r in rows] == [
        ("ERR0000001", "16", "16", "30.0")]
    exported = (settings.data_dir / "ENA_accession_numbers" / f"{TAXON}.csv").read_text()
    assert exported.splitlines()[0].endswith(
        "fetched_at,assembly_status,assembly_path,assembly_md5,contigs,total_length,n50,"
        "assembly_error")


def test_contigs_that_do_not_match_the_workers_md5_hold_the_worker(lab):
    contents = lab.add_runs("ERR0000001")
    record = lab.finished_worker(contents)
    assembly_output(lab, record, contents)
    (lab.backend.folder(record) / "out" / "ERR0000001" / "ERR0000001.contigs.fa.gz").write_bytes(
        b"torn")

    report = Collector(lab.settings, lab.backend, lab.registry, lab.store).collect()

    assert report.held == [record.name]
    assert lab.store.get(record.name).phase is Phase.HELD
    assert "ERR0000001.contigs.fa.gz has MD5" in lab.registry.get(TAXON).needs_attention
    assert lab.accessions.load()["ERR0000001"].status is RunStatus.ASSIGNED
