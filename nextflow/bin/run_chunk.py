#!/usr/bin/env python3
"""Run a worker's chunk: fetch every run, keep the manifest, write DONE.json, call back home.

Usage: ``run_chunk.py WORKER_DIR [--max-parallel N] [--retries N] [--timeout S]
[--transient-budget S] [--backoff S] [--profile NAME] [--products reads|assembly|both]``.

With ``nextflow`` on PATH the pipeline (``WORKER_DIR/nextflow/main.nf``) does the fetching;
otherwise this script runs the same fetcher itself with the same parallelism. Either way each
run is entered in ``out/manifest.tsv`` (rewritten atomically) the moment it finishes, so a
runner that dies keeps every verified run; a restarted runner skips the runs the manifest
holds and resumes partial files from ``WORKER_DIR/partial/<run>/``. ``out/DONE.json`` is
written last (home treats its presence as "finished"), then POSTed to the callback URL.

What comes home is set by ``WORKER_DIR/worker.json`` (see products.py; ``--products``
overrides its ``products``): with ``assembly`` or ``both`` each verified run is assembled by
``assemble_run.py`` before its rows enter the manifest.
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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
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
from products import (
    PRODUCTS,
    Assembler,
    Settings,
    assembly_counts,
    plan,
    products_ready,
    read_settings,
    record_unassembled,
)
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


def fetch_embedded(runs: Runs, worker: Path, manifest: Manifest, options: Options,
                   assembler: Assembler | None = None) -> int:
    """The path without Nextflow: the fetcher for every run, ``parallel`` runs at a time, and
    the assembly of each verified run in a pool of its own, so fetching goes on meanwhile."""
    assemblies: list[Future[None]] = []
    slots = assembler.parallel if assembler else 1
    with ThreadPoolExecutor(max_workers=slots) as assembling, \
            ThreadPoolExecutor(max_workers=options.parallel) as pool:
        def fetched(run: str, results: list[Result]) -> None:
            if assembler is None or not all(r.ok for r in results):
                manifest.record(run, results)  # a failed fetch is not assembled
            else:
                assemblies.append(assembling.submit(_assemble, assembler, worker, manifest,
                                                    run, results))

        futures = [pool.submit(_one_run, run, files, worker, options, fetched)
                   for run, files in runs]
        for future in futures:
            future.result()
    for assembly in assemblies:
        assembly.result()
    return 0


def _one_run(run: str, files: list[Expected], worker: Path, options: Options,
             fetched: Callable[[str, list[Result]], None]) -> None:
    if STOP.is_set():
        return
    stage = worker / "partial" / run
    results = fetch_run(run, files, worker / "out" / run, stage, retries=options.retries,
                        timeout=options.timeout, transient_budget=options.transient_budget,
                        backoff=options.backoff, stop=STOP)
    if any(r.cause == STOPPED for r in results):
        return  # not finished: the partial files wait for the next runner
    shutil.rmtree(stage, ignore_errors=True)
    fetched(run, results)


def _assemble(assembler: Assembler, worker: Path, manifest: Manifest, run: str,
              results: list[Result]) -> None:
    """The products first, then the manifest: a run in the manifest is finished with them.
    Its rows stay the fetch's (``ok``) whatever the assembly's verdict."""
    run_dir = worker / "out" / run
    if assembler.assemble(run_dir, run):
        manifest.record(run, results)
    elif not STOP.is_set():  # stopped: the run is not finished, a restart assembles it
        record_unassembled(manifest, run_dir, results, "the assembly step gave no report")


def check_leftovers(worker: Path, manifest: Manifest, runs: Runs, settings: Settings) -> None:
    """Runs without a verdict whose files are in out/ anyway are checked here.

    With assembly a run counts only with its products: verified reads without a report (the
    step could not run) are a transient failure, which costs home no attempt."""
    finished = manifest.finished()
    for run, files in runs:
        if run in finished:
            continue
        run_dir = worker / "out" / run
        results = []
        for want in files:
            path = run_dir / want.name
            ok = path.is_file() and path.stat().st_size == want.size \
                and md5_file(path).hexdigest() == want.md5
            error = "" if ok else f"{want.name}: not fetched from {want.url}"
            results.append(Result(run, want.name, want.size, want.md5, ok, error,
                                  cause="" if ok else TRANSIENT, finished_at=utc_stamp()))
        if settings.assembles:
            verified = [replace(r, ok=True, error="", cause="") for r in results]
            if products_ready(run_dir, run, verified):
                results = verified  # assembled, its reads deleted on purpose
            elif all(r.ok for r in results):
                record_unassembled(manifest, run_dir, results, "it was not assembled")
                continue
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


def run(worker: Path, options: Options, products: str | None = None) -> int:
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
        settings = read_settings(worker)
    except FetchError as exc:
        log(str(exc))
        finish(worker, {**summary([], status="failed"), "error": str(exc)})
        return 1
    manifest = Manifest(out, runs)
    manifest.load()
    pending = [(run, files) for run, files in runs if run not in manifest.finished()]
    log(f"{len(runs)} runs, {len(runs) - len(pending)} finished before, "
        f"{options.parallel} at a time")
    if products:
        settings = replace(settings, products=products)
    sizes = plan(settings)
    if settings.assembles:
        log(f"products {settings.products}: {settings.assembler}, {sizes.parallel} at a time, "
            f"{sizes.threads} cores and {sizes.memory_gb} GB each")
    code = 0
    if pending:
        if shutil.which("nextflow"):
            code = fetch_with_nextflow(pending, worker, manifest, options, STOP,
                                       settings, sizes)
        else:
            assembler = Assembler(settings, sizes, STOP) if settings.assembles else None
            code = fetch_embedded(pending, worker, manifest, options, assembler)
    if STOP.is_set():
        log("stopped before finishing: no DONE.json written")
        return EXIT_STOPPED
    if code != 0:
        log(f"the pipeline failed ({code}); finished runs are in the manifest, "
            "a restart resumes the rest")
        return EXIT_PIPELINE
    check_leftovers(worker, manifest, runs, settings)
    done = summary(manifest.all_rows())
    if settings.assembles:
        done.update(assembly_counts(out, [r for r, _ in runs if r in manifest.finished()]))
    finish(worker, done)
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
    parser.add_argument("--products", choices=PRODUCTS,
                        help="what comes home; overrides worker.json's products (reads)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    options = Options(max(1, args.max_parallel), args.retries, args.timeout,
                      args.transient_budget, args.profile, args.backoff)
    return run(args.worker.resolve(), options, args.products)


if __name__ == "__main__":
    sys.exit(main())
