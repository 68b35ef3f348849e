#!/usr/bin/env python3
"""Fetch + merge + filter of a large read_run answer: microfetch against a naive baseline.

Generates an N-row read_run TSV (default 1,000,000), serves it from 127.0.0.1 with the ENA
stand-in, then runs in separate child processes (so peak RSS is each one's own):

- microfetch: `check_taxon` (streamed to a file, count-checked, merged) and `filter_taxon`;
- baseline: the whole body read into memory, `pandas.read_csv`, written out, and the same
  selection rules applied row by row.

Prints wall time and peak RSS of both and their ratios.
Usage: python benchmarks/bench_ena_fetch.py [--rows N]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from backend.ena_standin import REAL_HOST, EnaData, EnaStandIn  # noqa: E402

TAXON = 562


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

MICROFETCH = PEAK + """
import sys, json, time
from datetime import datetime, UTC
from backend.settings import load_settings
from backend.registry import Registry, Taxon
from backend.fetch_accession_links import check_taxon
from backend.parse_fetched_data import filter_taxon
settings = load_settings(json.loads(sys.argv[1]))
registry = Registry.from_settings(settings)
registry.ensure_ready()
with registry.transaction() as table:
    table[562] = Taxon(562)
now = datetime.now(UTC)
check = check_taxon(settings, registry, 562, now, progress=False)
result = filter_taxon(settings, registry, 562, now)
print(json.dumps({"rows": check.total, "selected": result.selected, "hwm": hwm()}))
"""

BASELINE = PEAK + """
import sys, io, json, requests, pandas
from backend.settings import load_settings
from backend.ena import FIELDS
from backend.parse_fetched_data import decide
settings = load_settings(json.loads(sys.argv[1]))
body = requests.post(settings.ena_portal_url + "/search", data={
    "result": "read_run", "query": "tax_tree(562)", "fields": ",".join(FIELDS),
    "format": "tsv", "limit": "0"}).text
frame = pandas.read_csv(io.StringIO(body), sep="\\t", dtype=str, keep_default_na=False)
frame.to_csv(sys.argv[2] + "/metadata.csv", index=False)
selected = sum(decide(row, settings).files is not None for row in frame.to_dict("records"))
print(json.dumps({"rows": len(frame), "selected": selected, "hwm": hwm()}))
"""


def measure(code: str, env: dict[str, str], workdir: str) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS in MB and the printed result of a child process."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, json.dumps(env), workdir],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.perf_counter() - started
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, result.pop("hwm"), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    data = EnaData()
    data.rows[TAXON] = synthetic_rows(args.rows)
    ena = EnaStandIn(data).start()
    try:
        with tempfile.TemporaryDirectory() as ours, tempfile.TemporaryDirectory() as theirs:
            env = ena.settings_env() | {"MICROFETCH_ENA_TIMEOUT": "600"}
            mine = measure(MICROFETCH, env | {"MICROFETCH_CSV": f"{ours}/m.csv",
                                              "MICROFETCH_DATA_DIR": f"{ours}/data"}, ours)
            base = measure(BASELINE, env, theirs)
    finally:
        ena.stop()
    print(f"rows: {args.rows}")
    print(f"microfetch: {mine[0]:7.1f} s  peak RSS {mine[1]:7.0f} MB  {mine[2]}")
    print(f"baseline:   {base[0]:7.1f} s  peak RSS {base[1]:7.0f} MB  {base[2]}")
    print(f"ratio (microfetch / baseline): time {mine[0] / base[0]:.2f}, "
          f"peak RSS {mine[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
