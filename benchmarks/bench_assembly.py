#!/usr/bin/env python3
"""Bytes a worker sends home for one taxon with ``reads`` against ``assembly``, and their cost.

Simulates a small taxon (N runs, each a random genome of G kb sequenced 2x150 at D-fold depth
with art_illumina), assembles every run with `nextflow/bin/assemble_run.py` (fastp + SKESA), and
compares what would come home: the FASTQ files (``reads``) or the contigs and the report
(``assembly``), with the outbound transfer cost at $0.01 per GiB. Goal: at least 20x less.
Needs art_illumina, fastp and skesa on PATH (scripts/test.sh installs them).
Usage: python benchmarks/bench_assembly.py [--runs 3] [--genome-kb 100] [--depth 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.worker.simulate import random_genome, simulate_pairs, write_fasta  # noqa: E402

ASSEMBLE = ROOT / "nextflow" / "bin" / "assemble_run.py"
DOLLARS_PER_GIB = 0.01  # outbound transfer beyond the free allowance (DigitalOcean)
GOAL = 20


@dataclass(frozen=True)
class Run:
    run: str
    genome: int
    reads_bytes: int
    assembly_bytes: int
    total_length: int
    contigs: int
    seconds: float


def one_run(folder: Path, run: str, genome_length: int, depth: int, seed: int,
            threads: int, memory_gb: int) -> Run:
    """Simulate one run's reads, assemble them keeping the reads, and weigh both products."""
    run_dir = folder / run
    run_dir.mkdir()
    fasta = write_fasta(folder / f"{run}.genome.fa", run, random_genome(genome_length, seed))
    reads = simulate_pairs(fasta, run_dir, run, depth=depth, seed=seed)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ASSEMBLE), str(run_dir), "--run", run, "--keep-reads",
                    "--threads", str(threads), "--memory-gb", str(memory_gb)],
                   check=True, stderr=subprocess.DEVNULL, timeout=3600)
    seconds = time.perf_counter() - started
    report_file = run_dir / f"{run}.assembly.json"
    report = json.loads(report_file.read_text())
    if report["status"] != "assembled":
        raise SystemExit(f"{run} did not assemble: {report['error']}")
    products = [report_file, run_dir / report["contigs_file"]]
    return Run(run, genome_length, sum(p.stat().st_size for p in reads),
               sum(p.stat().st_size for p in products), report["total_length"],
               report["contigs"], seconds)


def cost(size: int) -> float:
    return size / 2**30 * DOLLARS_PER_GIB


def print_table(runs: list[Run], depth: int) -> float:
    print(f"{len(runs)} simulated runs, 2x150 at {depth}x, assembled with fastp + SKESA")
    print(f"{'run':<12}{'genome bp':>11}{'assembled bp':>14}{'contigs':>9}"
          f"{'reads bytes':>14}{'assembly bytes':>16}{'ratio':>8}{'seconds':>9}")
    for r in runs:
        print(f"{r.run:<12}{r.genome:>11,}{r.total_length:>14,}{r.contigs:>9}"
              f"{r.reads_bytes:>14,}{r.assembly_bytes:>16,}"
              f"{r.reads_bytes / r.assembly_bytes:>7.1f}x{r.seconds:>9.1f}")
    reads = sum(r.reads_bytes for r in runs)
    assembly = sum(r.assembly_bytes for r in runs)
    ratio = reads / assembly
    print(f"{'taxon':<12}{'':>11}{'':>14}{'':>9}{reads:>14,}{assembly:>16,}{ratio:>7.1f}x")
    print(f"transfer cost at ${DOLLARS_PER_GIB}/GiB: reads ${cost(reads):.8f}, "
          f"assembly ${cost(assembly):.8f}")
    per_tb = 10**12 / 2**30 * DOLLARS_PER_GIB
    print(f"at this ratio, 100 TB of reads (${100 * per_tb:,.0f} to bring home) would be "
          f"{100 / ratio:.2f} TB of assemblies (${100 * per_tb / ratio:,.0f})")
    print(f"goal >= {GOAL}x less with assembly: {'met' if ratio >= GOAL else 'NOT met'}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--genome-kb", type=int, default=100)
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-gb", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp), f"ERR{9100000 + i}", args.genome_kb * 1000, args.depth,
                        seed=100 + i, threads=args.threads, memory_gb=args.memory_gb)
                for i in range(args.runs)]
    ratio = print_table(runs, args.depth)
    sys.exit(0 if ratio >= GOAL else 1)


if __name__ == "__main__":
    main()
