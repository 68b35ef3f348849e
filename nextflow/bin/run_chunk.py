#!/usr/bin/env python3
"""Run a worker's chunk: fetch every run, write the manifest and DONE.json, call back home.

Usage: ``run_chunk.py WORKER_DIR [--max-parallel N] [--retries N] [--timeout S]``.

With ``nextflow`` on PATH the pipeline (``WORKER_DIR/nextflow/main.nf``) does the fetching;
otherwise this script runs the same fetcher itself with the same parallelism. Either way the
files in ``out/`` are then checked again and described in ``out/manifest.tsv``; ``out/DONE.json``
is written last (home treats its presence as "finished"), then POSTed to the callback URL.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fetch_run import Expected, FetchError, Result, expected_files, fetch_run, md5_file

STOP = threading.Event()
CALLBACK_RETRIES = 5


def log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


def read_chunk(path: Path) -> list[tuple[str, list[Expected]]]:
    """``chunk.tsv`` as (run, files); FetchError when it cannot be used."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc}", permanent=True) from None
    if not lines or lines[0].split("\t") != ["run_accession", "urls", "md5s", "bytes"]:
        raise FetchError(f"{path} does not start with the chunk.tsv header", permanent=True)
    runs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 4:
            raise FetchError(f"{path} line {number} has {len(cells)} fields, not 4",
                             permanent=True)
        runs.append((cells[0], expected_files(*cells[1:])))
    return runs


def fetch_embedded(runs: list[tuple[str, list[Expected]]], out: Path, parallel: int,
                   retries: int, timeout: float) -> dict[tuple[str, str], Result]:
    """The fallback path: the fetcher for every run, ``parallel`` runs at a time."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(_one_run, run, files, out / run, retries, timeout)
                   for run, files in runs]
        return {(r.run, r.file): r for future in futures for r in future.result()}


def _one_run(run: str, files: list[Expected], outdir: Path, retries: int,
             timeout: float) -> list[Result]:
    if STOP.is_set():
        return []
    results = fetch_run(run, files, outdir, retries=retries, timeout=timeout, stop=STOP)
    for result in results:
        log(f"{run}: {result.file} " + ("ok" if result.ok else f"FAILED: {result.error}"))
    return results


def fetch_with_nextflow(worker: Path, parallel: int, retries: int, timeout: float) -> int:
    argv = [
        "nextflow", "run", str(worker / "nextflow" / "main.nf"),
        "-work-dir", str(worker / "work"),
        "--chunk", str(worker / "chunk.tsv"), "--outdir", str(worker / "out"),
        "--max_parallel", str(parallel), "--retries", str(retries), "--timeout", str(timeout),
    ]
    log("running " + " ".join(argv))
    return subprocess.run(argv, cwd=worker, check=False).returncode


def describe(runs: list[tuple[str, list[Expected]]], out: Path,
             known: dict[tuple[str, str], Result]) -> list[Result]:
    """The manifest rows: the fetcher's verdicts, and a fresh check of anything else in out/."""
    rows = []
    for run, files in runs:
        for want in files:
            result = known.get((run, want.name))
            if result is None:
                path = out / run / want.name
                ok = path.is_file() and path.stat().st_size == want.size \
                    and md5_file(path).hexdigest() == want.md5
                result = Result(run, want.name, want.size, want.md5, ok,
                                "" if ok else _why(path, want))
            rows.append(result)
    return rows


def _why(path: Path, want: Expected) -> str:
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        return f"not fetched from {want.url}" + (" (partial)" if part.exists() else "")
    return f"size or MD5 differs from the expected {want.size} bytes, {want.md5}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(out: Path, rows: list[Result]) -> None:
    lines = ["run\tfile\tbytes\tmd5\tstatus\terror"]
    for r in rows:
        error = r.error.replace("\t", " ").replace("\n", " ")
        status = "ok" if r.ok else "failed"
        lines.append(f"{r.run}\t{r.file}\t{r.size}\t{r.md5}\t{status}\t{error}")
    write_atomic(out / "manifest.tsv", "\n".join(lines) + "\n")


def summary(rows: list[Result], status: str = "done") -> dict[str, object]:
    by_run: dict[str, bool] = {}
    for r in rows:
        by_run[r.run] = by_run.get(r.run, True) and r.ok
    return {
        "status": status,
        "runs_ok": sum(by_run.values()),
        "runs_failed": sum(not ok for ok in by_run.values()),
        "bytes": sum(r.size for r in rows if r.ok),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def call_back(worker: Path, done: dict[str, object], backoff: float = 2.0) -> bool:
    """POST DONE.json home; retried on connection errors and 5xx, never on 4xx."""
    retries = CALLBACK_RETRIES
    url_file = worker / "callback_url"
    base = url_file.read_text().strip() if url_file.exists() else ""
    if not base:
        log("no callback_url: home will find DONE.json by itself")
        return False
    url = f"{base.rstrip('/')}/api/workers/{worker.name}/callback"
    token = (worker / "token").read_text().strip()
    body = json.dumps(done).encode()
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30):
                log(f"callback to {url} accepted")
                return True
        except urllib.error.HTTPError as exc:
            log(f"callback to {url} answered {exc.code}")
            if exc.code < 500:
                return False
        except OSError as exc:
            log(f"callback to {url} failed: {exc}")
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    log("callback gave up; DONE.json stands and home will find it")
    return False


def run(worker: Path, parallel: int, retries: int, timeout: float) -> int:
    out = worker / "out"
    out.mkdir(parents=True, exist_ok=True)
    (worker / "run_chunk.pid").write_text(f"{os.getpid()}\n")
    try:
        runs = read_chunk(worker / "chunk.tsv")
    except FetchError as exc:
        log(str(exc))
        done = summary([], status="failed") | {"error": str(exc)}
        write_atomic(out / "DONE.json", json.dumps(done) + "\n")
        call_back(worker, done)
        return 1
    log(f"{len(runs)} runs, {parallel} at a time")
    known: dict[tuple[str, str], Result] = {}
    if shutil.which("nextflow"):
        fetch_with_nextflow(worker, parallel, retries, timeout)
    else:
        known = fetch_embedded(runs, out, parallel, retries, timeout)
    if STOP.is_set():
        log("stopped before finishing: no DONE.json written")
        return 143
    rows = describe(runs, out, known)
    write_manifest(out, rows)
    done = summary(rows)
    write_atomic(out / "DONE.json", json.dumps(done) + "\n")
    log(f"done: {done}")
    call_back(worker, done)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch a worker's chunk and report home.")
    parser.add_argument("worker", type=Path, help="the worker folder (holds chunk.tsv)")
    parser.add_argument("--max-parallel", type=int, default=4, help="runs at once (4)")
    parser.add_argument("--retries", type=int, default=3, help="retries per file (3)")
    parser.add_argument("--timeout", type=float, default=60, help="stall timeout, s (60)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    return run(args.worker.resolve(), max(1, args.max_parallel), args.retries, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
