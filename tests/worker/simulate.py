"""Simulated sequencing data for the assembly tests and benchmark: a random genome, Illumina
reads sampled from it by art_illumina, and random reads that no genome explains."""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
from pathlib import Path

ART_PROFILE = "HS25"  # HiSeq 2500: reads up to 150 bp


def random_genome(length: int, seed: int) -> str:
    """A genome with no structure at all: no repeats, so one contig is the right answer."""
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(length))


def write_fasta(path: Path, name: str, sequence: str) -> Path:
    lines = [sequence[i:i + 80] for i in range(0, len(sequence), 80)]
    path.write_text(f">{name}\n" + "\n".join(lines) + "\n")
    return path


def gzip_file(source: Path, target: Path) -> Path:
    """Gzip without a timestamp, so the same reads always have the same MD5."""
    with open(source, "rb") as raw, open(target, "wb") as out, \
            gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as packed:
        shutil.copyfileobj(raw, packed)
    return target


def simulate_pairs(genome: Path, folder: Path, run: str, depth: int = 30, length: int = 150,
                   insert: int = 300, seed: int = 7) -> list[Path]:
    """``<run>_1.fastq.gz`` and ``<run>_2.fastq.gz``: paired reads from art_illumina."""
    prefix = folder / f"{run}.art"
    subprocess.run(
        ["art_illumina", "-ss", ART_PROFILE, "-i", str(genome), "-p", "-l", str(length),
         "-f", str(depth), "-m", str(insert), "-s", "10", "-rs", str(seed), "-na", "-q",
         "-o", str(prefix)],
        check=True, capture_output=True, timeout=300)
    reads = []
    for mate in (1, 2):
        plain = Path(f"{prefix}{mate}.fq")
        reads.append(gzip_file(plain, folder / f"{run}_{mate}.fastq.gz"))
        plain.unlink()
    return reads


def random_reads(folder: Path, run: str, pairs: int, length: int = 150,
                 seed: int = 11) -> list[Path]:
    """Paired reads of random bases: nothing overlaps, so nothing can be assembled."""
    rng = random.Random(seed)
    reads = []
    for mate in (1, 2):
        path = folder / f"{run}_{mate}.fastq.gz"
        records = []
        for i in range(pairs):
            bases = "".join(rng.choice("ACGT") for _ in range(length))
            records.append(f"@{run}.{i}/{mate}\n{bases}\n+\n{'I' * length}\n")
        path.write_bytes(gzip.compress("".join(records).encode(), mtime=0))
        reads.append(path)
    return reads


def count_fastq(path: Path) -> tuple[int, int]:
    """(reads, bases) in a gzipped FASTQ file."""
    reads = bases = 0
    with gzip.open(path, "rt") as handle:
        for number, line in enumerate(handle):
            if number % 4 == 1:
                reads += 1
                bases += len(line.strip())
    return reads, bases
