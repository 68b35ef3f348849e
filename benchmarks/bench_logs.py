#!/usr/bin/env python3
"""Per-taxon logs at many taxa: the one routing sink against a loguru sink per taxon.

The baseline is the approach it replaced (``logger.add(<taxon>.log, filter=...)`` the first
time a taxon logs): every log call runs every sink's filter, and every sink holds a file open.
Both are measured in this process, side by side: the time to make N taxa loggable, and the
median time of one log call to a random taxon once they are.

Usage: python benchmarks/bench_logs.py [--taxa 10000] [--calls 300]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from loguru import logger  # noqa: E402

from backend.logs import setup_logging, taxon_log  # noqa: E402


def old_taxon_log(log_dir: Path, added: set[int]) -> Callable[[int], object]:
    """The replaced ``taxon_log``: a sink per taxon, added on first use."""

    def bound(taxon_id: int) -> object:
        if taxon_id not in added:
            added.add(taxon_id)
            logger.add(log_dir / f"{taxon_id}.log", level="INFO", rotation="20 MB",
                       retention=10, encoding="utf-8",
                       filter=lambda record, tid=taxon_id: record["extra"].get("taxon_id") == tid)
        return logger.bind(taxon_id=taxon_id)

    return bound


def measure(make: Callable[[int], object], taxa: int,
            calls: int) -> tuple[float, float, float]:
    """(seconds to make every taxon loggable, seconds to write a first line to each,
    median ms of one log call to a random taxon after that)."""
    started = time.perf_counter()
    for taxon in range(1, taxa + 1):
        make(taxon)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    for taxon in range(1, taxa + 1):  # creates the files the router opens on demand
        make(taxon).info("first line")  # type: ignore[attr-defined]
    first = time.perf_counter() - started
    rng = random.Random(7)
    samples = []
    for _ in range(calls):
        taxon = rng.randint(1, taxa)
        started = time.perf_counter()
        make(taxon).info("checked ENA: {} runs", taxon)  # type: ignore[attr-defined]
        samples.append((time.perf_counter() - started) * 1000)
    return setup, first, statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--taxa", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.taxa + 100  # the baseline keeps a file open per taxon
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    with tempfile.TemporaryDirectory() as tmp:
        new_dir, old_dir = Path(tmp) / "new", Path(tmp) / "old"
        setup_logging(new_dir)
        new = measure(taxon_log, args.taxa, args.calls)
        setup_logging(old_dir)
        old = measure(old_taxon_log(old_dir, set()), args.taxa, args.calls)
        logger.remove()

    print(f"{args.taxa} taxa, median of {args.calls} log calls")
    print(f"{'':36} {'router':>10} {'sink per taxon':>15} {'speed-up':>9}")
    labels = ("make every taxon loggable (s)", "a first line to every taxon (s)",
              "one log call, files existing (ms)")
    for label, ours, theirs in zip(labels, new, old, strict=True):
        print(f"{label:36} {ours:10.3f} {theirs:15.3f} {theirs / max(ours, 1e-9):8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
