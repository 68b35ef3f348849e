"""Who runs a worker folder: pid files that name a process beyond its pid, and folder locks.

A pid alone is not an identity (pids are reused), so a pid file holds the pid, the process
start time from ``/proc/<pid>/stat`` and the worker folder; a process is the one named only
while all three still match and its ``/proc/<pid>/cmdline`` names the script and the folder.
Standard library only, Python 3.9 or newer; Linux (``/proc``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    if len(fields) < 20 or fields[0] == "Z":
        return None  # a zombie has finished: it runs nothing any more
    return int(fields[19])


def runner_id(worker: Path, pid: int, started: int) -> str:
    """The per-worker id shown to home: folder name, pid and start time together."""
    return f"{worker.name}:{pid}:{started}"


def write_pid_file(path: Path, worker: Path, pid: int | None = None) -> dict[str, Any]:
    """Record ``pid`` (this process by default) as the runner of ``worker``, atomically."""
    pid = pid or os.getpid()
    started = start_time(pid) or 0
    record = {"pid": pid, "start_time": started, "worker": str(worker),
              "runner_id": runner_id(worker, pid, started)}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)
    return record


def read_pid_file(path: Path) -> dict[str, Any] | None:
    """A pid file's record, or None when it is missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def is_alive(record: dict[str, Any] | None, script: str) -> bool:
    """Is the process the pid file names still that process, running ``script`` here?"""
    if not record:
        return False
    pid = int(record["pid"])
    if start_time(pid) != record.get("start_time"):
        return False
    try:
        argv = [os.fsdecode(arg) for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    # the folder may have been given relative or through a symlink: compare real paths
    worker = os.path.realpath(str(record.get("worker", "")))
    named = any(os.path.realpath(os.path.join(cwd, arg)) == worker for arg in argv if arg)
    return named and any(arg.endswith(script) for arg in argv)


def hold_lock(path: Path) -> IO[str] | None:
    """An exclusive lock on ``path`` for this process's life, or None when another holds it.

    The kernel drops the lock when the process dies however it dies, so a lock is never stale.
    """
    handle = open(path, "a+")  # noqa: SIM115 - kept open for the life of the process
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    with contextlib.suppress(OSError):
        os.set_inheritable(handle.fileno(), False)
    return handle
