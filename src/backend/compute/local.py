"""The embedded `local` backend: a worker is a folder on this machine and a process group.

Pulling still goes through rsync, so local and remote workers take the same path home.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.compute.base import (
    ComputeBackend,
    LiveWorker,
    SaveRecord,
    WorkerState,
    last_json,
    runner_env,
    state_from_supervisor,
)
from backend.compute.transfer import rsync_pull_argv, run
from backend.errors import OperationError
from backend.settings import Settings
from backend.state.workers import NAME_PATTERN, Phase, WorkerRecord

STOP_GRACE_SECONDS = 5.0


class LocalBackend(ComputeBackend):
    """Workers under ``<data dir>/local_workers/<name>/``, run by ``run_chunk.py``."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir).resolve() / "local_workers"
        assert settings.pipeline_dir is not None
        self.pipeline = Path(settings.pipeline_dir)

    def folder(self, record: WorkerRecord) -> Path:
        return self.root / record.name

    def slots(self, live: Sequence[WorkerRecord]) -> int:
        mine = [r for r in live if r.backend == self.name]
        return max(0, self.settings.max_workers - len(mine))

    def disk_bytes(self) -> int:
        return int(self.settings.worker_disk_gb * 1e9)

    def start(self, record: WorkerRecord, folder: Path, save: SaveRecord) -> WorkerRecord:
        target = self.folder(record)
        if self.status(record) in (WorkerState.RUNNING, WorkerState.DONE):
            # Started before a crash (the supervisor's pid file says so): never a second one.
            record.phase = Phase.RUNNING
            save(record)
            return record
        if folder.resolve() != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, target, dirs_exist_ok=True)
        record.address = "localhost"
        record.remote_dir = str(target)
        record.phase = Phase.STARTING
        save(record)
        _preflight(target)
        record.extra["pid"] = _spawn_supervisor(target)
        record.phase = Phase.RUNNING
        save(record)
        return record

    def status(self, record: WorkerRecord) -> WorkerState:
        target = self.folder(record)
        if not target.exists():
            return WorkerState.GONE
        return state_from_supervisor(_supervisor(target, "--status", self.pipeline))

    def pull(self, record: WorkerRecord, dest: Path, timeout: int) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        argv = rsync_pull_argv(str(self.folder(record) / "out"), dest, timeout)
        run(argv, what=f"rsync of worker {record.name}")

    def remove_runs(self, record: WorkerRecord, runs: Sequence[str]) -> None:
        out = self.folder(record) / "out"
        for accession in runs:
            shutil.rmtree(out / accession, ignore_errors=True)

    def destroy(self, record: WorkerRecord) -> None:
        target = self.folder(record)
        if target.exists():
            _supervisor(target, "--stop", self.pipeline)  # for good: no restart undoes it
        pid = record.extra.get("pid")
        if pid:
            _stop_group(int(pid), target)
        shutil.rmtree(target, ignore_errors=True)

    def list_live(self) -> list[LiveWorker]:
        if not self.root.exists():
            return []
        return [
            LiveWorker(name=path.name, address="localhost", backend_id=str(path),
                       created_at=datetime.fromtimestamp(path.stat().st_mtime, UTC))
            for path in sorted(self.root.iterdir())
            if path.is_dir() and NAME_PATTERN.match(path.name)
        ]


def _script(folder: Path, name: str) -> list[str]:
    return [sys.executable, str(folder / "nextflow" / "bin" / name)]


def _supervisor(folder: Path, action: str, pipeline: Path) -> dict[str, Any]:
    """``supervise.py --status`` or ``--stop`` (this installation's copy: it only reads the
    folder): the runner is named by its id, not a bare pid."""
    extra = ["--kill-after", str(STOP_GRACE_SECONDS)] if action == "--stop" else []
    result = subprocess.run([sys.executable, str(pipeline / "bin" / "supervise.py"), action,
                             *extra, str(folder)],
                            capture_output=True, text=True, timeout=60, env=runner_env())
    return last_json(result.stdout) or {"state": "absent",
                                        "detail": result.stderr.strip()[-300:]}


def _preflight(folder: Path) -> None:
    """The worker's own check (Python, disk, tools): a worker that cannot run fails now."""
    result = subprocess.run([*_script(folder, "preflight.py"), str(folder)], capture_output=True,
                            text=True, timeout=120, env=runner_env())
    if result.returncode != 0:
        raise OperationError(f"worker {folder.name} cannot run here: "
                             f"{_preflight_reason(result.stdout, result.stderr)}", permanent=True)


def _preflight_reason(stdout: str, stderr: str) -> str:
    problems = (last_json(stdout) or {}).get("reasons")
    return "; ".join(map(str, problems)) if problems else (stderr.strip()[-300:] or "unknown")


def _spawn_supervisor(folder: Path) -> int:
    """Start the supervised runner in its own session, detached, with the allowed env only."""
    process = subprocess.Popen(
        [*_script(folder, "supervise.py"), str(folder), "--log", str(folder / "run_chunk.out")],
        cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, env=runner_env(),
    )
    return process.pid


def _alive(pid: int, folder: Path) -> bool:
    """Is ``pid`` a live runner of ``folder``? Guards against a reused pid and zombies."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own finished child so it is not a zombie
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and str(folder).encode() in cmdline


def _stop_group(pid: int, folder: Path) -> None:
    """SIGTERM the runner's process group, then SIGKILL what is left after a grace period."""
    if not _alive(pid, folder):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and _alive(pid, folder):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
