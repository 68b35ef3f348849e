#!/usr/bin/env python3
"""The state layer at users' scale, against the CSV state layer it replaced.

Every figure is a median of several runs in this process, printed beside a baseline measured
the same way: the old per-taxon CSV (read the whole list, rewrite it) for run changes, and the
old registry module (read from git history, commit 4a12f88) for registry updates.

Usage: python benchmarks/bench_state.py [--runs 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from backend.collection.collect import Collector  # noqa: E402
from backend.collection.manifest import Verdict  # noqa: E402
from backend.compute.local import LocalBackend  # noqa: E402
from backend.ena.parse_fetched_data import filter_taxon  # noqa: E402
from backend.jobs.dispatch import Dispatcher  # noqa: E402
from backend.settings import load_settings  # noqa: E402
from backend.state.accessions import COLUMNS, SQL_COLUMNS, AccessionList, Run  # noqa: E402
from backend.state.registry import Registry, Taxon  # noqa: E402
from backend.state.store import database_of  # noqa: E402
from backend.state.transitions import settled as settle_taxon  # noqa: E402
from backend.state.workers import WorkerRecord, WorkerStore, token_hash  # noqa: E402

OLD = "4a12f88"  # the last commit with the CSV state layer


def median_ms(action: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run_row(taxon: int, n: int) -> tuple:
    run = Run(f"ERR{n:08d}", fastq_files=(f"ftp.sra.ebi.ac.uk/vol1/ERR{n:08d}_1.fastq.gz",
                                           f"ftp.sra.ebi.ac.uk/vol1/ERR{n:08d}_2.fastq.gz"),
              fastq_bytes=(100_000, 100_000), fastq_md5=("a" * 32, "b" * 32))
    return run.to_sql(taxon)


def fill(settings, taxon: int, count: int, start: int = 0) -> None:
    db = database_of(settings)
    sql = (f"INSERT INTO runs ({', '.join(SQL_COLUMNS)}) VALUES "
           f"({', '.join('?' * len(SQL_COLUMNS))})")
    with db.write() as con:
        con.executemany(sql, (run_row(taxon, start + n) for n in range(count)))


def old_list_cycle(path: Path) -> None:
    """What the CSV layer did for any change of a run: read the whole list, write it again."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    with open(path.with_suffix(".tmp"), "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    path.with_suffix(".tmp").replace(path)


def old_registry_module(folder: Path):
    """The registry module as it was before the database, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:src/backend/registry.py"],
                            capture_output=True, text=True, check=True).stdout
    # Its helpers moved into the state layer since; their behaviour did not change.
    source = source.replace("from backend.statefile import", "from backend.state.statefile import")
    path = folder / "old_registry.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_registry", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_registry"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def settings_in(folder: Path, **extra: str):
    return load_settings({"MICROFETCH_CSV": str(folder / "microfetch.csv"),
                          "MICROFETCH_DATA_DIR": str(folder / "data"), **extra})


def registry_with(settings, taxa: int) -> Registry:
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("bench") as table:
        for taxon in range(1, taxa + 1):
            table[taxon] = Taxon(taxon, f"taxon {taxon}")
    return registry


def bench_runs(folder: Path, count: int, report: list) -> None:
    settings = settings_in(folder)
    registry = registry_with(settings, 1)
    fill(settings, 1, count)
    export = AccessionList.of(settings, 1).export()
    baseline = median_ms(lambda: old_list_cycle(export), 3)
    backend = LocalBackend(settings)
    store = WorkerStore.of(settings)
    dispatcher = Dispatcher(settings, backend, registry, store)
    accessions = AccessionList.of(settings, 1)

    def claim() -> None:
        runs = accessions.pending(200)
        claimed = dispatcher._claim(1, runs)
        assert claimed is not None
        claimed[1].release()
        store.delete(claimed[0])  # keep the cap free for the next round

    report.append((f"claim a 200-run chunk, {count:,}-run taxon", median_ms(claim), baseline))

    now = datetime.now(UTC).replace(microsecond=0)
    collector = Collector(settings, backend, registry, store)
    batches = iter(range(1, 1000))  # each round marks 200 runs not fetched before

    def worker() -> WorkerRecord:
        start = 200 * next(batches)
        names = [f"ERR{n:08d}" for n in range(start, start + 200)]
        return WorkerRecord(name="mf-1-9999-abcdef", backend="local", taxon_id=1, chunk=9999,
                            runs=names, bytes=200 * 200_000, token_sha256=token_hash("x"),
                            created_at=now)

    def mark_fetched() -> None:
        record = worker()
        verdict = Verdict(ok={name: [] for name in record.runs}, bytes_ok=200 * 200_000)
        collector._record_runs(accessions, record, verdict, now)

    report.append((f"mark 200 runs fetched, {count:,}-run taxon", median_ms(mark_fetched),
                   baseline))
    settle_taxon(settings, registry, store, 1)  # the first settle writes the exports

    def collect_bookkeeping() -> None:
        record = worker()
        verdict = Verdict(ok={name: [] for name in record.runs}, bytes_ok=200 * 200_000)
        accessions.get(record.runs)  # what verification reads
        collector._record_runs(accessions, record, verdict, now)
        settle_taxon(settings, registry, store, 1)

    report.append((f"collect one 200-run worker (bookkeeping), {count:,}-run taxon",
                   median_ms(collect_bookkeeping), 3 * baseline))


def bench_registry(folder: Path, report: list) -> None:
    old = old_registry_module(folder)
    for taxa in (1_000, 10_000):
        here = folder / f"reg{taxa}"
        here.mkdir()
        settings = settings_in(here)
        registry = registry_with(settings, taxa)
        old_path = here / "old.csv"
        old_path.write_bytes(registry.path.read_bytes())
        legacy = old.Registry(old_path, here / "old-history.jsonl")
        report.append((f"one registry update, {taxa:,} taxa", update_ms(registry),
                       update_ms(legacy)))
    status_and_health(settings, report)


def update_ms(registry: object) -> float:
    priorities = iter(range(1, 1000))
    return median_ms(lambda: registry.update(7, "bench", priority=next(priorities)))


def status_and_health(settings, report: list) -> None:
    env = {"MICROFETCH_CSV": str(settings.csv_path), "PATH": "/usr/bin:/bin",
           "MICROFETCH_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(ROOT / "src")}
    status = [sys.executable, "-c",
              "import sys; from backend.cli.main import main; sys.exit(main(['status']))"]
    ours = median_ms(lambda: subprocess.run(status, env=env, capture_output=True, check=True), 3)
    report.append(("`microfetch status`, 10,000 taxa (whole process)", ours, None))
    from web import create_app

    client = create_app(settings).test_client()
    report.append(("GET /healthz, 10,000 taxa", median_ms(lambda: client.get("/healthz"), 20),
                   None))


def bench_filter(folder: Path, taxa: int, per_taxon: int, report: list) -> None:
    settings = settings_in(folder, MICROFETCH_FASTQ_HOSTS="ftp.sra.ebi.ac.uk")
    registry = registry_with(settings, taxa + 1)
    for taxon in range(1, taxa + 1):
        fill(settings, taxon, per_taxon, start=taxon * per_taxon)
    small = taxa + 1
    metadata = settings.data_dir / "ENA_metadata" / f"{small}.csv"
    metadata.parent.mkdir(parents=True, exist_ok=True)
    with open(metadata, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["run_accession", "instrument_platform", "library_strategy",
                         "library_source", "library_layout", "base_count", "fastq_ftp",
                         "fastq_md5", "fastq_bytes"])
        for n in range(10):
            acc = f"ERR{90_000_000 + n}"
            writer.writerow([acc, "ILLUMINA", "WGS", "GENOMIC", "PAIRED", "1000",
                             f"ftp.sra.ebi.ac.uk/v/{acc}_1.fastq.gz;ftp.sra.ebi.ac.uk/v/{acc}"
                             "_2.fastq.gz", f"{'a' * 32};{'b' * 32}", "10;10"])
    now = datetime.now(UTC)
    ours = median_ms(lambda: filter_taxon(settings, registry, small, now))
    lists = folder / "old-lists"
    lists.mkdir()
    for taxon in range(1, taxa + 1):  # what the old duplicate check read: every other list
        with open(lists / f"{taxon}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for n in range(per_taxon):
                writer.writerow([f"ERR{taxon * per_taxon + n:08d}", "False"] + [""] * 10)

    def old_duplicate_check() -> None:
        for path in lists.iterdir():
            with open(path, newline="") as handle:
                sum(1 for _ in csv.DictReader(handle))

    theirs = median_ms(old_duplicate_check, 3)
    report.append((f"filter a 10-run taxon among {taxa:,} taxa of {per_taxon:,} runs", ours,
                   theirs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 runs, 100 taxa")
    args = parser.parse_args()
    runs, taxa = (100_000, 100) if args.quick else (args.runs, 1_000)
    report: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, step in (("runs", lambda f: bench_runs(f, runs, report)),
                           ("registry", lambda f: bench_registry(f, report)),
                           ("filter", lambda f: bench_filter(f, taxa, 1000, report))):
            folder = root / name
            folder.mkdir()
            step(folder)
    print(f"{'operation':62} {'now ms':>9} {'before ms':>10} {'speed-up':>9}")
    for label, ours, theirs in report:
        before = f"{theirs:10.1f}" if theirs is not None else f"{'-':>10}"
        ratio = f"{theirs / ours:8.0f}x" if theirs else f"{'-':>9}"
        print(f"{label:62} {ours:9.1f} {before} {ratio}")


if __name__ == "__main__":
    main()
