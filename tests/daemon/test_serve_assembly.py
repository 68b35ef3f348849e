"""Genomes, not raw reads: `serve` on the local backend assembles on the worker and brings home
verified contigs; a run that cannot assemble is recorded and does not block its taxon."""

from __future__ import annotations

import csv
import gzip
import hashlib
import signal
from pathlib import Path

from backend.demo.ena_standin import REAL_HOST, EnaData
from backend.settings import load_settings
from backend.state.accessions import AccessionList

from ..worker.simulate import random_genome, random_reads, simulate_pairs, write_fasta

TAXON = 1639
GENOME = 50_000


def serve_reads(data: EnaData, taxon: int, accession: str, reads: list[Path]) -> None:
    """A read_run row whose two FASTQ files are these, with their true MD5s."""
    paths, md5s, sizes = [], [], []
    for path in reads:
        body = path.read_bytes()
        served = f"vol1/fastq/{accession[:6]}/{accession}/{path.name}"
        data.files["/" + served] = body
        paths.append(f"{REAL_HOST}/{served}")
        md5s.append(hashlib.md5(body).hexdigest())
        sizes.append(str(len(body)))
    data.rows[taxon].append({
        "run_accession": accession, "tax_id": str(taxon), "scientific_name": "Listeria",
        "instrument_platform": "ILLUMINA", "library_strategy": "WGS",
        "library_source": "GENOMIC", "library_layout": "PAIRED", "base_count": "1000000",
        "fastq_ftp": ";".join(paths), "fastq_md5": ";".join(md5s),
        "fastq_bytes": ";".join(sizes), "first_public": "2026-01-01",
        "last_updated": "2026-01-01"})


def contig_length(path: Path) -> int:
    with gzip.open(path, "rt") as handle:
        return sum(len(line.strip()) for line in handle if not line.startswith(">"))


def test_serve_brings_home_verified_contigs_and_records_a_run_that_cannot_assemble(
        daemon, tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", "genome", random_genome(GENOME, seed=1))
    serve_reads(daemon.ena.data, TAXON, "ERR9000001",
                simulate_pairs(fasta, tmp_path, "ERR9000001", depth=30))
    serve_reads(daemon.ena.data, TAXON, "ERR9000002",
                random_reads(tmp_path, "ERR9000002", pairs=5000))
    daemon.env.update(MICROFETCH_WORKER_PRODUCTS="assembly", MICROFETCH_ASSEMBLY_THREADS="2",
                      MICROFETCH_ASSEMBLY_MEMORY_GB="4")
    assert daemon.cli("--offline", str(TAXON), add_taxa=True).returncode == 0

    daemon.start()
    daemon.wait_until(lambda: daemon.all_complete(TAXON), 300)
    assert daemon.signal(signal.SIGTERM) == 0

    settings = load_settings(daemon.env)
    runs = AccessionList.of(settings, TAXON).load()
    genomes = settings.data_dir / "genomes" / str(TAXON)
    good, noise = runs["ERR9000001"], runs["ERR9000002"]
    assert good.assembly_status == "assembled"
    contigs = genomes / good.assembly_path
    assert hashlib.md5(contigs.read_bytes()).hexdigest() == good.assembly_md5
    assert abs(contig_length(contigs) - GENOME) <= 0.02 * GENOME
    assert abs(good.total_length - GENOME) <= 0.02 * GENOME
    assert not list((genomes / "ERR9000001").glob("*.fastq.gz"))  # the reads stayed there
    assert noise.assembly_status == "failed" and noise.assembly_error
    assert noise.attempts == 0  # an assembly failure is data, not a failed fetch
    assert sorted(p.name for p in (genomes / "ERR9000002").glob("*.fastq.gz")) == [
        "ERR9000002_1.fastq.gz", "ERR9000002_2.fastq.gz"]  # its reads came home instead
    sheet = (genomes / "samplesheet.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in sheet[1:]] == ["ERR9000002"]
    with open(genomes / "assemblies.tsv", newline="") as handle:
        assert [row["run"] for row in csv.DictReader(handle, delimiter="\t")] == ["ERR9000001"]
