#!/usr/bin/env python3
"""Can this host run the worker's chunk? Prints one JSON object; exit 0 yes, 1 no (reasons).

Usage: ``preflight.py WORKER_DIR [--pipeline auto|embedded|nextflow]``.

Checks the Python version (the worker scripts need 3.9 or newer), the free disk against the
bytes the chunk still has to fetch, and the tools: ``rsync`` always (home pulls with it), and
``nextflow`` and ``java`` (17 or newer) when the pipeline mode is ``nextflow``.

Written for old interpreters on purpose (no ``from __future__ import annotations``, no
3.9-only syntax), so that a host with Python 3.6 gets told why instead of a SyntaxError.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

MIN_PYTHON = (3, 9)
MIN_JAVA = 17                # Nextflow 25.10 runs on Java 17 or newer
DISK_MARGIN = 1.05           # filesystem slack, a manifest, logs
DISK_SPARE_BYTES = 200 * 10**6


def chunk_bytes(worker: str) -> int:
    """The bytes every file of ``chunk.tsv`` adds up to; ValueError when it cannot be read."""
    with open(os.path.join(worker, "chunk.tsv"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines or lines[0].split("\t") != ["run_accession", "urls", "md5s", "bytes"]:
        raise ValueError("chunk.tsv does not start with the chunk.tsv header")
    total = 0
    for line in lines[1:]:
        cells = line.split("\t")
        if len(cells) == 4:
            total += sum(int(size) for size in cells[3].split(";") if size)
    return total


def bytes_held(worker: str) -> int:
    """What out/ and partial/ already hold: a resumed chunk needs only the rest."""
    total = 0
    for folder in ("out", "partial"):
        for root, _, files in os.walk(os.path.join(worker, folder)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(root, name))
    return total


def check_python(reasons: List[str]) -> Dict[str, object]:
    """This interpreter's version against the minimum."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    ok = sys.version_info[:2] >= MIN_PYTHON
    if not ok:
        reasons.append("python {} is older than {}.{}".format(version, *MIN_PYTHON))
    return {"version": version, "executable": sys.executable, "ok": ok}


def check_disk(worker: str, reasons: List[str]) -> Dict[str, object]:
    """Free disk in the worker folder against what the chunk still needs."""
    try:
        need = max(0, chunk_bytes(worker) - bytes_held(worker))
    except (OSError, ValueError) as exc:
        reasons.append("cannot read the chunk: {}".format(exc))
        return {"ok": False}
    need = int(need * DISK_MARGIN) + DISK_SPARE_BYTES
    free = shutil.disk_usage(worker).free
    ok = free >= need
    if not ok:
        reasons.append("{:.2f} GB free in {}, the chunk needs {:.2f} GB".format(
            free / 1e9, worker, need / 1e9))
    return {"free_bytes": free, "need_bytes": need, "ok": ok}


def check_tools(pipeline: str, reasons: List[str]) -> Dict[str, Optional[str]]:
    """Where the tools are; the missing ones the mode needs are reasons."""
    wanted = ["rsync"] + (["nextflow", "java"] if pipeline == "nextflow" else [])
    found = {tool: shutil.which(tool) for tool in [*wanted, "nextflow"]}
    missing = [tool for tool in wanted if not found[tool]]
    if missing:
        reasons.append("not on PATH: " + ", ".join(missing))
    return found


def java_major(java: str) -> Optional[int]:
    """The major version ``java -version`` reports (8 for "1.8.0"), or None."""
    try:
        out = subprocess.run([java, "-version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=30).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java(found: Dict[str, Optional[str]], reasons: List[str]) -> Optional[int]:
    """Java's major version, a reason when Nextflow cannot run on it."""
    java = found.get("java")
    if not java:
        return None
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        reasons.append("java {} is older than {} (Nextflow needs it)".format(major, MIN_JAVA))
    return major


def preflight(worker: str, pipeline: str) -> Dict[str, object]:
    """The whole report: ``ok`` and the ``reasons`` when not."""
    reasons = []  # type: List[str]
    report = {
        "python": check_python(reasons),
        "disk": check_disk(worker, reasons) if os.path.isdir(worker) else {"ok": False},
        "tools": check_tools(pipeline, reasons),
        "pipeline": pipeline,
    }  # type: Dict[str, object]
    if pipeline == "nextflow":
        report["java_major"] = check_java(report["tools"], reasons)  # type: ignore[arg-type]
    if not os.path.isdir(worker):
        reasons.append("no worker folder {}".format(worker))
    report["ok"] = not reasons
    report["reasons"] = reasons
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: print the report, exit 0 when the host can run the chunk."""
    parser = argparse.ArgumentParser(description="Check that this host can run a chunk.")
    parser.add_argument("worker", help="the worker folder (holds chunk.tsv)")
    parser.add_argument("--pipeline", choices=("auto", "embedded", "nextflow"), default="auto",
                        help="nextflow: Nextflow and Java are required (auto: optional)")
    args = parser.parse_args(argv)
    report = preflight(os.path.abspath(args.worker), args.pipeline)
    print(json.dumps(report, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
