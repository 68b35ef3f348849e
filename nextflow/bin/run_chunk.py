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
import csv
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
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fetch_run import (
    MANIFEST_HEADER,
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
from runner_id import hold_lock, write_pid_file

STOP = threading.Event()
CALLBACK_RETRIES = 5
EXIT_BUSY = 75           # another runner holds this worker folder (EX_TEMPFAIL)
EXIT_PIPELINE = 70       # the pipeline failed before every run had a verdict: restart me
EXIT_STOPPED = 143
POLL_SECONDS = 2.0       # how often the manifest catches up with the pipeline's verdicts
MAX_PIPELINE_SECONDS = 30 * 24 * 3600  # bound on one pipeline run; a chunk takes hours
STOP_GRACE_SECONDS = 60
SHARED_DISK_PROFILES = ("standard", "slurm")  # where partial files can outlive a task
Runs = list[tuple[str, list[Expected]]]


@dataclass(frozen=True)
class Options:
    parallel: int = 4
    retries: int = 3
    timeout: float = 60.0
    transient_budget: float = 600.0
    profile: str = "standard"
    backoff: float = 2.0


def log(message: str) -> None:
    print(f"{utc_stamp()} {message}", file=sys.stderr, flush=True)


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


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_rows(path: Path) -> list[Result]:
    """Manifest rows (``out/manifest.tsv`` or a task's verdict) as Results."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError:
        return []
    results = []
    for row in rows:
        try:
            results.append(Result(
                row["run"], row["file"], int(row["bytes"]), row["md5"], row["status"] == "ok",
                row.get("error") or "", cause=row.get("cause") or "",
                attempts=int(row.get("attempts") or 0), finished_at=row.get("finished_at") or ""))
        except (KeyError, ValueError):
            continue  # a row we cannot read is a run not finished: it will be fetched again
    return results


class Manifest:
    """``out/manifest.tsv``: every finished run, rewritten atomically each time one finishes."""

    def __init__(self, out: Path, runs: Runs) -> None:
        self.path = out / "manifest.tsv"
        self.out = out
        self.order = [run for run, _ in runs]
        self.files = dict(runs)
        self.rows: dict[str, list[Result]] = {}
        self.lock = threading.Lock()

    def load(self) -> None:
        """Take over what an earlier runner finished; runs whose files went missing are not."""
        by_run: dict[str, list[Result]] = {}
        for result in read_rows(self.path):
            by_run.setdefault(result.run, []).append(result)
        for run, results in by_run.items():
            if run in self.files and self._whole(run, results):
                self.rows[run] = results

    def _whole(self, run: str, results: list[Result]) -> bool:
        names = {want.name for want in self.files[run]}
        if {r.file for r in results} != names:
            return False
        return all(not r.ok or _size(self.out / run / r.file) == r.size for r in results)

    def finished(self) -> set[str]:
        with self.lock:
            return set(self.rows)

    def record(self, run: str, results: list[Result]) -> None:
        with self.lock:
            self.rows[run] = results
            self._write()
        verdict = "ok" if all(r.ok for r in results) else "FAILED: " + "; ".join(
            f"{r.error} [{r.cause}]" for r in results if not r.ok)
        log(f"{run}: {verdict}")

    def _write(self) -> None:
        lines = ["\t".join(MANIFEST_HEADER)]
        for run in self.order:
            lines.extend("\t".join(r.row()) for r in self.rows.get(run, []))
        write_atomic(self.path, "\n".join(lines) + "\n")

    def all_rows(self) -> list[Result]:
        with self.lock:
            return [r for run in self.order for r in self.rows.get(run, [])]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


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


def nextflow_argv(worker: Path, chunk: Path, options: Options) -> list[str]:
    argv = [
        "nextflow", "run", str(worker / "nextflow" / "main.nf"), "-resume",
        "-work-dir", str(worker / "work"), "-profile", options.profile,
        "--chunk", str(chunk), "--outdir", str(worker / "out"),
        "--verdicts", str(worker / "verdicts"),
        "--max_parallel", str(options.parallel), "--retries", str(options.retries),
        "--timeout", f"{options.timeout:g}", "--transient_budget", f"{options.transient_budget:g}",
    ]
    if options.profile in SHARED_DISK_PROFILES:
        argv += ["--partial_dir", str(worker / "partial")]
    return argv


def nextflow_env() -> dict[str, str]:
    # v2: the strict syntax, needed by main.nf's typed params block on Nextflow 25.10
    return {**os.environ, "NXF_SYNTAX_PARSER": "v2", "NXF_ANSI_LOG": "false"}


def fetch_with_nextflow(runs: Runs, worker: Path, manifest: Manifest, options: Options) -> int:
    """Run the pipeline on the pending runs, entering each verdict as it is published."""
    pending = dict(runs)
    # verdicts published just before an earlier runner died: entered, never fetched again
    take_verdicts(worker, manifest, pending, final=False)
    if not pending:
        return 0
    chunk = worker / "chunk.tsv"
    if len(pending) != len(manifest.order):
        chunk = worker / "pending.tsv"  # only what is left after an earlier runner
        write_atomic(chunk, pending_tsv(list(pending.items())))
    (worker / "verdicts").mkdir(exist_ok=True)
    argv = nextflow_argv(worker, chunk, options)
    log("running " + " ".join(argv))
    process = subprocess.Popen(argv, cwd=worker, env=nextflow_env())
    for _ in range(int(MAX_PIPELINE_SECONDS / POLL_SECONDS)):
        try:
            process.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if STOP.is_set():
            break
        take_verdicts(worker, manifest, pending, final=False)
    code = _end(process)
    take_verdicts(worker, manifest, pending, final=True)
    if not STOP.is_set():
        take_trace(worker, manifest, pending)
    log(f"pipeline exited with {code}")
    return code


def _end(process: subprocess.Popen[bytes]) -> int:
    """The pipeline's exit code; on a stop, SIGTERM first so Nextflow ends its tasks."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def pending_tsv(runs: Runs) -> str:
    lines = ["run_accession\turls\tmd5s\tbytes"]
    for run, files in runs:
        lines.append("\t".join([run, ";".join(w.url for w in files),
                                ";".join(w.md5 for w in files),
                                ";".join(str(w.size) for w in files)]))
    return "\n".join(lines) + "\n"


def take_verdicts(worker: Path, manifest: Manifest, pending: dict[str, list[Expected]],
                  final: bool) -> None:
    """Enter the verdicts the pipeline published whose files have arrived in out/."""
    for run in list(pending):
        results = [r for r in read_rows(worker / "verdicts" / f"{run}.verdict.tsv")
                   if r.run == run]
        if not results:
            continue
        arrived = all(not r.ok or _size(worker / "out" / run / r.file) == r.size
                      for r in results)
        if not arrived and not final:
            continue  # publishing lags the verdict: look again at the next poll
        manifest.record(run, [_missing(worker, r) for r in results])
        shutil.rmtree(worker / "partial" / run, ignore_errors=True)
        del pending[run]


def _missing(worker: Path, result: Result) -> Result:
    if not result.ok or _size(worker / "out" / result.run / result.file) == result.size:
        return result
    return replace(result, ok=False, cause=TRANSIENT,
                   error=f"{result.file}: verified, then missing from out/ after publishing")


def read_trace(worker: Path) -> dict[str, list[dict[str, str]]]:
    """The pipeline's trace, per run (its ``tag``): every task attempt in order."""
    tasks: dict[str, list[dict[str, str]]] = {}
    try:
        with open(worker / "pipeline_trace.tsv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                tasks.setdefault(row.get("tag") or "", []).append(row)
    except OSError:
        pass
    return tasks


def take_trace(worker: Path, manifest: Manifest, pending: dict[str, list[Expected]]) -> None:
    """Tasks that died without a verdict become failed runs; verified runs' work is cleaned."""
    trace = read_trace(worker)
    finished = manifest.finished()
    for run, tasks in trace.items():
        last = tasks[-1]
        attempts = max(_int(t.get("attempt")) for t in tasks)
        log(f"{run}: task {last.get('status')} (exit {last.get('exit')}) after {attempts} "
            f"attempts in {last.get('duration')}")
        if run in pending and last.get("status") in ("FAILED", "ABORTED"):
            error = (f"the task died without a verdict (exit {last.get('exit')}, "
                     f"{attempts} attempts)")
            manifest.record(run, [
                Result(run, want.name, want.size, want.md5, False, f"{want.name}: {error}",
                       cause=TRANSIENT, attempts=attempts, finished_at=utc_stamp())
                for want in pending.pop(run)])
        elif run in finished and all(r.ok for r in manifest.rows.get(run, [])):
            for task in tasks:  # the run is safe in out/: its task folders are dead weight
                _remove_work(worker, task.get("workdir") or "")


def _remove_work(worker: Path, workdir: str) -> None:
    path = Path(workdir)
    work = worker / "work"
    if workdir and path.is_dir() and work in path.resolve().parents:
        shutil.rmtree(path, ignore_errors=True)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


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


def summary(rows: list[Result], status: str = "done") -> dict[str, object]:
    by_run: dict[str, list[Result]] = {}
    for r in rows:
        by_run.setdefault(r.run, []).append(r)
    failed = [rs for rs in by_run.values() if not all(r.ok for r in rs)]
    return {
        "status": status,
        "runs_ok": len(by_run) - len(failed),
        "runs_failed": len(failed),
        # failed only for the host's fault: home gives these back without counting an attempt
        "runs_transient": sum(all(r.ok or r.cause == TRANSIENT for r in rs) for rs in failed),
        "bytes": sum(r.size for r in rows if r.ok),
        "finished_at": utc_stamp(),
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


def finish(worker: Path, done: dict[str, object]) -> None:
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
        fetch = fetch_with_nextflow if shutil.which("nextflow") else fetch_embedded
        code = fetch(pending, worker, manifest, options)
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
