"""The compute backend interface, and the worker folder every backend ships.

A backend makes workers exist and go away; everything else (chunking, verification, the
registry) is written once, above it. Every method is safe to call again after a crash.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from backend.state.statefile import atomic_write_text
from backend.state.workers import WorkerRecord


class WorkerState(StrEnum):
    """What a backend reports of a worker."""

    STARTING = "starting"  # not yet reachable or runner not yet started
    RUNNING = "running"    # the chunk runner is working
    DONE = "done"          # out/DONE.json exists
    GONE = "gone"          # the worker no longer exists, or its runner stopped or vanished
    CRASHED = "crashed"    # the runner kept crashing and its supervisor gave up


def last_json(stdout: str) -> dict[str, Any] | None:
    """The JSON object a worker script prints as its last line; None when there is none."""
    try:
        value = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def state_from_supervisor(answer: dict[str, Any] | None) -> WorkerState:
    """``supervise.py --status``'s JSON as a backend state. No readable answer is "not yet
    known" (STARTING), never GONE: the collector would take a gone worker's data and destroy it,
    and a worker that stays unknown meets the reconciler's deadlines instead."""
    if answer is None:
        return WorkerState.STARTING
    state = answer.get("state")
    if state == "done":
        return WorkerState.DONE
    if state == "running":
        return WorkerState.RUNNING
    if state == "absent":
        return WorkerState.STARTING
    if state == "bad_summary":
        return WorkerState.DONE  # finished, but its summary is bad: collection holds it
    if state == "crashed":
        return WorkerState.CRASHED
    return WorkerState.GONE  # stopped, dead (killed, host rebooted) or no folder


#: The only variables a runner inherits: no token or secret of the daemon's reaches a worker.
RUNNER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "JAVA_HOME",
              "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
              "NXF_HOME", "NXF_VER", "NXF_SYNTAX_PARSER")


def runner_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The runner's environment: the allow-list above, nothing else."""
    environ = dict(os.environ) if environ is None else environ
    return {name: environ[name] for name in RUNNER_ENV if name in environ}


@dataclass(frozen=True)
class ChunkRun:
    """One run of a chunk, with full URLs and the expected MD5 and size of each file."""

    accession: str
    urls: tuple[str, ...]
    md5s: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class Chunk:
    taxon_id: int
    index: int
    runs: tuple[ChunkRun, ...]

    @property
    def total_bytes(self) -> int:
        return sum(run.total_bytes for run in self.runs)


@dataclass(frozen=True)
class LiveWorker:
    """A worker the backend says exists, whether or not home has a record of it."""

    name: str
    address: str = ""
    backend_id: str = ""
    created_at: datetime | None = None


#: Persist a record while a backend fills it in (droplet id, address, host key).
SaveRecord = Callable[[WorkerRecord], None]


class ComputeBackend(ABC):
    """Start a worker for a chunk, report its state, pull its ``out/``, destroy it, list."""

    name: str = "abstract"

    @abstractmethod
    def slots(self, live: Sequence[WorkerRecord]) -> int:
        """How many more workers this backend can take now, given the live records."""

    @abstractmethod
    def disk_bytes(self) -> int:
        """Usable disk of one worker, before headroom."""

    @abstractmethod
    def start(self, record: WorkerRecord, folder: Path, save: SaveRecord) -> WorkerRecord:
        """Make the worker exist, ship ``folder`` to it and start the chunk runner.

        Calls ``save`` after each step that creates something, so a crash leaves a record
        that says what exists. Starting a record that already got part-way resumes it.
        """

    @abstractmethod
    def status(self, record: WorkerRecord) -> WorkerState: ...

    @abstractmethod
    def pull(self, record: WorkerRecord, dest: Path, timeout: int) -> None:
        """Copy the worker's ``out/`` into ``dest`` (resumable); raise OperationError."""

    def remove_runs(self, record: WorkerRecord, runs: Sequence[str]) -> None:
        """Free the worker's disk of runs already verified at home (collect while fetching).

        A backend that cannot leaves them; they go with the worker.
        """
        return None

    @abstractmethod
    def destroy(self, record: WorkerRecord) -> None:
        """Stop the worker and remove it and its data; a no-op when already gone."""

    @abstractmethod
    def list_live(self) -> list[LiveWorker]:
        """Every worker of microfetch that exists on this backend."""

    def estimate(self, chunk_bytes: Sequence[int]) -> dict[str, Any]:
        """What a dispatch of these chunks will move (and, where it bills, cost)."""
        total = sum(chunk_bytes)
        return {
            "workers": len(chunk_bytes), "bytes": total,
            "text": f"{len(chunk_bytes)} workers, {total / 1e9:.2f} GB to fetch and bring home",
        }


def chunk_tsv(chunk: Chunk) -> str:
    """``chunk.tsv`` of the worker contract."""
    lines = ["run_accession\turls\tmd5s\tbytes"]
    for run in chunk.runs:
        lines.append("\t".join([
            run.accession, ";".join(run.urls), ";".join(run.md5s),
            ";".join(str(size) for size in run.sizes),
        ]))
    return "\n".join(lines) + "\n"


PIPELINE_FILES = ("main.nf", "nextflow.config", "bin", "microfetch-worker@.service")


def worker_options(settings: Any) -> dict[str, Any]:
    """``worker.json``: what the worker brings home and how it assembles (docs: worker.md)."""
    return {
        "products": settings.worker_products, "assembler": settings.assembler,
        "min_contig": settings.min_contig,
        "min_total_length": settings.assembly_min_total_length,
        "min_n50": settings.assembly_min_n50, "assembly_threads": settings.assembly_threads,
        "assembly_memory_gb": settings.assembly_memory_gb,
        "reads_on_failure": settings.assembly_reads_on_failure,
    }


def prepare_folder(folder: Path, chunk: Chunk, token: str, callback_url: str,
                   pipeline_dir: Path, options: dict[str, Any] | None = None) -> Path:
    """Write a worker folder: chunk.tsv, worker.json, token (0600), callback_url and the
    pipeline."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "chunk.tsv", chunk_tsv(chunk))
    if options is not None:
        atomic_write_text(folder / "worker.json", json.dumps(options, indent=2) + "\n")
    atomic_write_text(folder / "token", token, mode=0o600)
    atomic_write_text(folder / "callback_url", callback_url.rstrip("/") + "\n")
    pipeline = folder / "nextflow"
    pipeline.mkdir(exist_ok=True)
    for name in PIPELINE_FILES:
        source = pipeline_dir / name
        if source.is_dir():
            shutil.copytree(source, pipeline / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, pipeline / name)
    # A wheel does not keep file modes; Nextflow runs bin/ scripts directly from PATH.
    for script in (pipeline / "bin").glob("*.py"):
        script.chmod(0o755)
    return folder
