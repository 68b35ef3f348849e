#!/usr/bin/env python3
"""Check + filter of a large read_run answer: microfetch, the code before it, a naive baseline.

Generates an N-row read_run TSV (default 1,000,000), serves it from 127.0.0.1 with the ENA
stand-in (each answer rendered once, before any timing), then runs each contender in its own
child process, so that peak RSS (VmHWM) is each one's own:

- microfetch: `check_taxon` (count, stream to a file, verify, merge in columnar batches into
  the `ena_metadata` table) and `filter_taxon` (decide what changed, write runs in batches);
- previous: the same two stages as of `--before` (default: the commit this work started from),
  taken out of git into a temporary package;
- baseline: the whole body read into memory, `pandas.read_csv`, written out, and the selection
  rules applied row by row (first check only).

Then 1% of the runs change at ENA (`last_updated` bumped) and microfetch and the previous code
check again incrementally: the cost of a recheck. Prints time and peak RSS side by side.
Times are of a whole child process (start and imports included). On a shared 2-core machine a
first check of 1,000,000 runs took 32–47 s at a peak of 215–259 MB, a 1% recheck 2.4–3.1 s
(README, Benchmarks).
Usage: python benchmarks/bench_ena_fetch.py [--rows N] [--skip-previous] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from backend.demo.ena_standin import PORTAL, REAL_HOST, EnaData, EnaStandIn  # noqa: E402
from backend.ena.client import FIELDS  # noqa: E402

TAXON = 562
#: The commit before issue 17: the code the new check is measured against.
BEFORE = "bb2a040ad6e63a366828549e79954f3a2bb436a0"


def synthetic_rows(count: int) -> list[dict[str, str]]:
    platforms = ("ILLUMINA",) * 8 + ("OXFORD_NANOPORE", "PACBIO_SMRT")
    rows = []
    for i in range(count):
        acc = f"ERR{10_000_000 + i}"
        path = f"{REAL_HOST}/vol1/fastq/{acc[:6]}/{acc}/{acc}"
        rows.append({
            "run_accession": acc, "experiment_accession": f"ERX{i}", "sample_accession":
            f"SAMEA{i}", "study_accession": "PRJEB1", "tax_id": str(TAXON),
            "scientific_name": "Escherichia coli", "instrument_platform": platforms[i % 10],
            "instrument_model": "Illumina NovaSeq 6000", "library_strategy": "WGS",
            "library_source": "GENOMIC", "library_selection": "RANDOM",
            "library_layout": "PAIRED" if i % 7 else "SINGLE", "read_count": "1000000",
            "base_count": "300000000", "fastq_ftp": f"{path}_1.fastq.gz;{path}_2.fastq.gz",
            "fastq_bytes": f"{100000 + i};{100001 + i}",
            "fastq_md5": f"{i:032x};{i + 1:032x}", "first_public": "2020-01-01",
            "last_updated": "2020-01-02",
        })
    return rows


# Each child reports its own peak RSS: VmHWM starts afresh at exec, while ru_maxrss of a child
# is inherited from this (large) parent at fork and would hide the child's own figure.
PEAK = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

STAGES = PEAK + """
import sys, json, time
from datetime import datetime, UTC
from backend.settings import load_settings
settings = load_settings(json.loads(sys.argv[1]))
if sys.argv[3] == "previous":
    from backend.registry import Registry, Taxon
    from backend.fetch_accession_links import check_taxon
    from backend.parse_fetched_data import filter_taxon
else:
    from backend.state.registry import Registry, Taxon
    from backend.ena.fetch_accession_links import check_taxon
    from backend.ena.parse_fetched_data import filter_taxon
registry = Registry.from_settings(settings)
registry.ensure_ready()
if 562 not in {row.taxonomy_id for row in registry.load()}:
    with registry.transaction() as table:
        table[562] = Taxon(562)
now = datetime.now(UTC)
started = time.perf_counter()
check = check_taxon(settings, registry, 562, now, progress=False)
checked = time.perf_counter()
after_check = hwm()
result = filter_taxon(settings, registry, 562, now)
print(json.dumps({"rows": check.total, "changed": check.new + check.changed,
                  "selected": result.selected, "check s": round(checked - started, 1),
                  "filter s": round(time.perf_counter() - checked, 1),
                  "check MB": round(after_check), "hwm": hwm()}))
"""

BASELINE = PEAK + """
import sys, io, json, requests, pandas
from backend.settings import load_settings
from backend.ena.client import FIELDS
from backend.ena.parse_fetched_data import decide
settings = load_settings(json.loads(sys.argv[1]))
body = requests.post(settings.ena_portal_url + "/search", data={
    "result": "read_run", "query": "tax_tree(562)", "fields": ",".join(FIELDS),
    "format": "tsv", "limit": "0"}).text
frame = pandas.read_csv(io.StringIO(body), sep="\\t", dtype=str, keep_default_na=False)
frame.to_csv(sys.argv[2] + "/metadata.csv", index=False)
selected = sum(decide(row, settings).files is not None for row in frame.to_dict("records"))
print(json.dumps({"rows": len(frame), "selected": selected, "hwm": hwm()}))
"""


def previous_tree(folder: Path, before: str) -> Path:
    """The whole ``src/`` of ``before``, for a child that runs the previous code as it was."""
    tree = folder / "previous"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", before, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree), "--strip-components=1"], input=archive,
                   check=True)
    return tree


def measure(name: str, code: str, env: dict[str, str], *args: str,
            src: Path = ROOT / "src") -> tuple[float, float, dict]:
    """Wall seconds, peak RSS in MB and the printed result of a child process (also printed
    at once: a long run shows what it has so far)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, json.dumps(env), *args],
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(src)})
    wall = time.perf_counter() - started
    if out.returncode:
        raise SystemExit(f"{args[1] if len(args) > 1 else 'baseline'} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    peak = result.pop("hwm")
    print(line(name, wall, peak, result), flush=True)
    return wall, peak, result


def warm(ena: EnaStandIn, query: str) -> None:
    """Render the answer once, outside any timing (the stand-in is not what is measured)."""
    response = requests.post(ena.base + PORTAL + "/search", data={
        "result": "read_run", "query": query, "fields": ",".join(FIELDS), "format": "tsv",
        "limit": "0"}, timeout=600)
    response.raise_for_status()


def change_one_percent(data: EnaData) -> str:
    """Bump 1% of the runs at ENA; returns the incremental query a recheck will send."""
    rows = data.rows[TAXON]
    for row in rows[:: 100]:
        row["base_count"], row["last_updated"] = "300000001", "2099-01-01"
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    return f"tax_tree({TAXON}) AND last_updated>={since}"


def line(name: str, wall: float, peak: float, result: dict) -> str:
    return f"{name:<28} {wall:8.1f} s  peak RSS {peak:7.0f} MB  {result}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--before", default=BEFORE, help="git revision of the previous code")
    parser.add_argument("--skip-previous", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    data = EnaData()
    data.rows[TAXON] = synthetic_rows(args.rows)
    ena = EnaStandIn(data).start()
    ena.cache = {}
    results: dict[str, tuple[float, float, dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work)
            env = ena.settings_env() | {"MICROFETCH_ENA_TIMEOUT": "600"}
            dirs = {name: {"MICROFETCH_CSV": f"{work}/{name}.csv",
                           "MICROFETCH_DATA_DIR": f"{work}/{name}"}
                    for name in ("microfetch", "previous")}
            warm(ena, f"tax_tree({TAXON})")
            contenders = ["microfetch"] + ([] if args.skip_previous else ["previous"])
            trees = {"microfetch": ROOT / "src"}
            if not args.skip_previous:
                trees["previous"] = previous_tree(folder, args.before)
            print(f"rows: {args.rows}", flush=True)
            for name in contenders:
                key = f"{name}: first check"
                results[key] = measure(key, STAGES, env | dirs[name], work, name,
                                       src=trees[name])
            if not args.skip_baseline:
                key = "baseline: first check"
                results[key] = measure(key, BASELINE, env, work)
            query = change_one_percent(data)
            ena.cache.clear()
            warm(ena, query)
            for name in contenders:
                key = f"{name}: 1% changed"
                results[key] = measure(key, STAGES, env | dirs[name], work, name,
                                       src=trees[name])
    finally:
        ena.stop()
    mine = results["microfetch: first check"]
    for other in ("previous: first check", "baseline: first check"):
        if other in results:
            theirs = results[other]
            print(f"ratio microfetch / {other.split(':')[0]} (first check): time "
                  f"{mine[0] / theirs[0]:.2f}, peak RSS {mine[1] / theirs[1]:.2f}")
    if "previous: 1% changed" in results:
        mine, theirs = results["microfetch: 1% changed"], results["previous: 1% changed"]
        print(f"ratio microfetch / previous (1% changed): time {mine[0] / theirs[0]:.2f}, "
              f"peak RSS {mine[1] / theirs[1]:.2f}")


if __name__ == "__main__":
    main()
