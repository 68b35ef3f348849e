#!/usr/bin/env python3
"""Run a worker's chunk: fetch every run, keep the manifest, write DONE.json, call back home.

Usage: ``run_chunk.py WORKER_DIR [--max-parallel N] [--retries N] [--timeout S]
[--transient-budget S] [--backoff S] [--profile NAME]``.

With ``nextflow`` on PATH the pipeline (``WORKER_DIR/nextflow/main.nf``) does the fetching;
otherwise this script runs the same fetcher itself with the same parallelism. Either way each
run is entered in ``out/manifest.tsv`` (rewritten atomically) the moment it finishes, so a
runner that dies keeps every verified run; a restarted runner skips the runs the manifest
holds and resumes partial files from ``WORKER_DIR/partial/<run>/``. ``out/DONE.json`` is
written last (home treats its presence as "finished"), then POSTed to the callback URL.
Standard library only, Python 3.9 or newer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chunk_state import Manifest, Options, Runs, log, summary, write_atomic
from fetch_run import (
    STOPPED,
    TRANSIENT,
    Expected,
    FetchError,
    Result,
    expected_files,
    fetch_run,
    md5_file,
    utc_stamp,
)
from nextflow_path import fetch_with_nextflow
from runner_id import hold_lock, write_pid_file

STOP = threading.Event()
CALLBACK_RETRIES = 5
EXIT_BUSY = 75           # another runner holds this worker folder (EX_TEMPFAIL)
EXIT_PIPELINE = 70       # the pipeline failed before every run had a verdict: restart me
EXIT_STOPPED = 143


def read_chunk(path: Path) -> Runs:
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


def fetch_embedded(runs: Runs, worker: Path, manifest: Manifest, options: Options) -> int:
    """The path without Nextflow: the fetcher for every run, ``parallel`` runs at a time."""
    with ThreadPoolExecutor(max_workers=options.parallel) as pool:
        futures = [pool.submit(_one_run, run, files, worker, manifest, options)
                   for run, files in runs]
        for future in futures:
            future.result()
    return 0


def _one_run(run: str, files: list[Expected], worker: Path, manifest: Manifest,
             options: Options) -> None:
    if STOP.is_set():
        return
    stage = worker / "partial" / run
    results = fetch_run(run, files, worker / "out" / run, stage, retries=options.retries,
                        timeout=options.timeout, transient_budget=options.transient_budget,
                        backoff=options.backoff, stop=STOP)
    if any(r.cause == STOPPED for r in results):
        return  # not finished: the partial files wait for the next runner
    manifest.record(run, results)
    shutil.rmtree(stage, ignore_errors=True)


def check_leftovers(worker: Path, manifest: Manifest, runs: Runs) -> None:
    """Runs without a verdict whose files are in out/ anyway are checked here."""
    finished = manifest.finished()
    for run, files in runs:
        if run in finished:
            continue
        results = []
        for want in files:
            path = worker / "out" / run / want.name
            ok = path.is_file() and path.stat().st_size == want.size \
                and md5_file(path).hexdigest() == want.md5
            error = "" if ok else f"{want.name}: not fetched from {want.url}"
            results.append(Result(run, want.name, want.size, want.md5, ok, error,
                                  cause="" if ok else TRANSIENT, finished_at=utc_stamp()))
        manifest.record(run, results)


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


def finish(worker: Path, done: dict[str, object]) -> None:
    """Write DONE.json, last, and call home."""
    write_atomic(worker / "out" / "DONE.json", json.dumps(done) + "\n")
    log(f"done: {done}")
    call_back(worker, done)


def group_leader() -> int:
    """The pid homes before ``supervise.py --status`` signal as a group (``kill -- -pid``).

    Under a supervisor started with setsid that is the supervisor, so stopping the group stops
    both; a group led by anything else (a shell, a test) is never named, only this process.
    """
    group = os.getpgid(0)
    return group if group in (os.getpid(), os.getppid()) else os.getpid()


def run(worker: Path, options: Options) -> int:
    """Fetch the chunk in ``worker``; the exit code (0, 1, 70, 75 or 143)."""
    out = worker / "out"
    out.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(worker / "run_chunk.lock")
    if lock is None:
        log(f"another runner is working in {worker}: not starting a second one")
        return EXIT_BUSY
    (worker / "run_chunk.pid").write_text(f"{group_leader()}\n")
    write_pid_file(worker / "run_chunk.id", worker)
    try:
        runs = read_chunk(worker / "chunk.tsv")
    except FetchError as exc:
        log(str(exc))
        finish(worker, {**summary([], status="failed"), "error": str(exc)})
        return 1
    manifest = Manifest(out, runs)
    manifest.load()
    pending = [(run, files) for run, files in runs if run not in manifest.finished()]
    log(f"{len(runs)} runs, {len(runs) - len(pending)} finished before, "
        f"{options.parallel} at a time")
    code = 0
    if pending:
        if shutil.which("nextflow"):
            code = fetch_with_nextflow(pending, worker, manifest, options, STOP)
        else:
            code = fetch_embedded(pending, worker, manifest, options)
    if STOP.is_set():
        log("stopped before finishing: no DONE.json written")
        return EXIT_STOPPED
    if code != 0:
        log(f"the pipeline failed ({code}); finished runs are in the manifest, "
            "a restart resumes the rest")
        return EXIT_PIPELINE
    check_leftovers(worker, manifest, runs)
    finish(worker, summary(manifest.all_rows()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description="Fetch a worker's chunk and report home.")
    parser.add_argument("worker", type=Path, help="the worker folder (holds chunk.tsv)")
    parser.add_argument("--max-parallel", type=int, default=4, help="runs at once (4)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a file whose content is wrong (3)")
    parser.add_argument("--timeout", type=float, default=60, help="stall timeout, s (60)")
    parser.add_argument("--transient-budget", type=float, default=600,
                        help="s without progress before a transient failure is final (600)")
    parser.add_argument("--backoff", type=float, default=2.0,
                        help="first wait after a failed try, s; doubles up to 60 (2)")
    parser.add_argument("--profile", default="standard",
                        help="Nextflow profile: standard, slurm, awsbatch, google-batch")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    options = Options(max(1, args.max_parallel), args.retries, args.timeout,
                      args.transient_budget, args.profile, args.backoff)
    return run(args.worker.resolve(), options)


if __name__ == "__main__":
    sys.exit(main())
