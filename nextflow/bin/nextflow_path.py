"""The Nextflow path of the runner: the pipeline on the pending runs, its verdicts and trace.

Each run's verdict (manifest rows written by fetch_run.py, published into ``verdicts/``) is
entered in the manifest as soon as its files have arrived in ``out/``; after the pipeline the
trace turns tasks that died without a verdict into failed runs and removes the task folders of
verified runs. With assembly (``worker.json``) a verified run is entered only once the ASSEMBLE
process has published its products. Standard library only, Python 3.9 or newer.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

from chunk_state import (
    Manifest,
    Options,
    Runs,
    end_process,
    log,
    read_rows,
    reads_deleted,
    size_of,
    write_atomic,
)
from fetch_run import TRANSIENT, Expected, Result, utc_stamp
from products import Plan, Settings, plan, products_ready, record_unassembled

POLL_SECONDS = 2.0       # how often the manifest catches up with the pipeline's verdicts
MAX_PIPELINE_SECONDS = 30 * 24 * 3600  # bound on one pipeline run; a chunk takes hours
SHARED_DISK_PROFILES = ("standard", "slurm")  # where partial files can outlive a task


def nextflow_argv(worker: Path, chunk: Path, options: Options,
                  settings: Settings | None = None, sizes: Plan | None = None) -> list[str]:
    """The `nextflow run` command line for the pending runs in ``chunk``."""
    settings = settings or Settings()
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
    argv += ["--products", settings.products]
    if settings.assembles:
        sizes = sizes or plan(settings)
        argv += ["--assembler", settings.assembler, "--min_contig", str(settings.min_contig),
                 "--min_total_length", str(settings.min_total_length),
                 "--min_n50", str(settings.min_n50),
                 "--reads_on_failure", str(settings.reads_on_failure).lower(),
                 "--assembly_threads", str(sizes.threads),
                 "--assembly_memory_gb", str(sizes.memory_gb),
                 "--assembly_parallel", str(sizes.parallel)]
    return argv


def nextflow_env() -> dict[str, str]:
    """The pipeline's environment: this one, with the strict syntax on."""
    # v2: the strict syntax, needed by main.nf's typed params block on Nextflow 25.10
    return {**os.environ, "NXF_SYNTAX_PARSER": "v2", "NXF_ANSI_LOG": "false"}


def fetch_with_nextflow(runs: Runs, worker: Path, manifest: Manifest, options: Options,
                        stop: threading.Event, settings: Settings | None = None,
                        sizes: Plan | None = None) -> int:
    """Run the pipeline on the pending runs, entering each verdict as it is published."""
    settings = settings or Settings()
    pending = dict(runs)
    assembles = settings.assembles
    # verdicts published just before an earlier runner died: entered, never fetched again
    take_verdicts(worker, manifest, pending, final=False, assembles=assembles)
    if not pending:
        return 0
    chunk = worker / "chunk.tsv"
    if len(pending) != len(manifest.order):
        chunk = worker / "pending.tsv"  # only what is left after an earlier runner
        write_atomic(chunk, pending_tsv(list(pending.items())))
    (worker / "verdicts").mkdir(exist_ok=True)
    argv = nextflow_argv(worker, chunk, options, settings, sizes)
    log("running " + " ".join(argv))
    process = subprocess.Popen(argv, cwd=worker, env=nextflow_env())
    for _ in range(int(MAX_PIPELINE_SECONDS / POLL_SECONDS)):
        try:
            process.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop.is_set():
            break
        take_verdicts(worker, manifest, pending, final=False, assembles=assembles)
    code = _end(process)
    # the pipeline ended of itself, well: an assembly that published nothing never will
    settled = code == 0 and not stop.is_set()
    take_verdicts(worker, manifest, pending, final=True, assembles=assembles, settled=settled)
    if not stop.is_set():
        take_trace(worker, manifest, pending)
    log(f"pipeline exited with {code}")
    return code


def _end(process: subprocess.Popen[bytes]) -> int:
    """The pipeline's exit code; on a stop, SIGTERM first so Nextflow ends its tasks."""
    return end_process(process)


def pending_tsv(runs: Runs) -> str:
    """A chunk.tsv of ``runs`` only."""
    lines = ["run_accession\turls\tmd5s\tbytes"]
    for run, files in runs:
        lines.append("\t".join([run, ";".join(w.url for w in files),
                                ";".join(w.md5 for w in files),
                                ";".join(str(w.size) for w in files)]))
    return "\n".join(lines) + "\n"


def take_verdicts(worker: Path, manifest: Manifest, pending: dict[str, list[Expected]],
                  final: bool, assembles: bool = False, settled: bool = False) -> None:
    """Enter the verdicts the pipeline published whose files have arrived in out/.

    With assembly a verified run waits for its products (ASSEMBLE publishes them after the
    fetch's verdict); one whose products never came, once the pipeline has ``settled``
    (ended by itself with 0), is a transient failure, the worker's."""
    for run in list(pending):
        results = [r for r in read_rows(worker / "verdicts" / f"{run}.verdict.tsv")
                   if r.run == run]
        if not results:
            continue
        if assembles and all(r.ok for r in results):
            if products_ready(worker / "out" / run, run, results):
                manifest.record(run, results)
                del pending[run]
            elif settled:
                record_unassembled(manifest, worker / "out" / run, results,
                                   "the assembly task published no report")
                del pending[run]
            continue
        arrived = all(not r.ok or size_of(worker / "out" / run / r.file) == r.size
                      for r in results)
        if not arrived and not final:
            continue  # publishing lags the verdict: look again at the next poll
        manifest.record(run, [_missing(worker, r) for r in results])
        shutil.rmtree(worker / "partial" / run, ignore_errors=True)
        del pending[run]


def _missing(worker: Path, result: Result) -> Result:
    if not result.ok or size_of(worker / "out" / result.run / result.file) == result.size \
            or reads_deleted(worker / "out" / result.run, result.run):
        return result
    return replace(result, ok=False, cause=TRANSIENT,
                   error=f"{result.file}: verified, then missing from out/ after publishing")


def read_trace(worker: Path) -> dict[str, list[dict[str, str]]]:
    """The pipeline's trace, per run (its ``tag``): every task attempt in order, FETCH_RUN's
    and ASSEMBLE's."""
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
        for task in tasks:
            if not (task.get("name") or "").startswith("FETCH_RUN"):
                log(f"{run}: {task.get('name')} {task.get('status')} (exit {task.get('exit')})")
        # an ASSEMBLE task that died is no fetch failure: only FETCH_RUN's tasks judge the fetch
        fetches = [t for t in tasks if (t.get("name") or "").startswith("FETCH_RUN")]
        last = fetches[-1] if fetches else {}
        attempts = max((_int(t.get("attempt")) for t in fetches), default=0)
        if fetches:
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
