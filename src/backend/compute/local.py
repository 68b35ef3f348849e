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

from backend.compute.base import ComputeBackend, LiveWorker, SaveRecord, WorkerState
from backend.settings import Settings
from backend.transfer import rsync_pull_argv, run
from backend.workers import NAME_PATTERN, Phase, WorkerRecord

STOP_GRACE_SECONDS = 5.0


class LocalBackend(ComputeBackend):
    """Workers under ``<data dir>/local_workers/<name>/``, run by ``run_chunk.py``."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir).resolve() / "local_workers"

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
            return record  # started before a crash: never start a second runner
        if folder.resolve() != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, target, dirs_exist_ok=True)
        record.address = "localhost"
        record.remote_dir = str(target)
        record.phase = Phase.STARTING
        save(record)
        record.extra["pid"] = _spawn_runner(target)
        record.phase = Phase.RUNNING
        save(record)
        return record

    def status(self, record: WorkerRecord) -> WorkerState:
        target = self.folder(record)
        if (target / "out" / "DONE.json").exists():
            return WorkerState.DONE
        pid = record.extra.get("pid")
        if pid and _alive(int(pid), target):
            return WorkerState.RUNNING
        if target.exists() and not pid:
            return WorkerState.STARTING
        return WorkerState.GONE

    def pull(self, record: WorkerRecord, dest: Path, timeout: int) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        argv = rsync_pull_argv(str(self.folder(record) / "out"), dest, timeout)
        run(argv, timeout=timeout * 10, what=f"rsync of worker {record.name}")

    def destroy(self, record: WorkerRecord) -> None:
        pid = record.extra.get("pid")
        if pid:
            _stop_group(int(pid), self.folder(record))
        shutil.rmtree(self.folder(record), ignore_errors=True)

    def list_live(self) -> list[LiveWorker]:
        if not self.root.exists():
            return []
        return [
            LiveWorker(name=path.name, address="localhost", backend_id=str(path),
                       created_at=datetime.fromtimestamp(path.stat().st_mtime, UTC))
            for path in sorted(self.root.iterdir())
            if path.is_dir() and NAME_PATTERN.match(path.name)
        ]


def _spawn_runner(folder: Path) -> int:
    """Start the chunk runner in its own process group, detached from our stdio."""
    log = open(folder / "run_chunk.out", "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            [sys.executable, str(folder / "nextflow" / "bin" / "run_chunk.py"), str(folder)],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
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
