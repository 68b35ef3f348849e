"""The one lock discipline for every state file (registry, accession lists, worker records).

A change is: take an inter-process lock, re-read the file, apply the change, write a temporary
file beside it, fsync it, rename it over the original, fsync the folder. Readers never lock:
a rename is atomic, so they see the old file or the new one, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from backend.errors import OperationError

#: How long a writer waits for another writer before giving up.
LOCK_TIMEOUT_SECONDS = 120.0


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the inter-process lock of ``path`` (a ``.lock`` file beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(path)), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout as exc:
        raise OperationError(
            f"{path} is locked by another microfetch process for more than {timeout:.0f} s; "
            f"check for a stuck process holding {lock_path(path)} and try again"
        ) from exc


def atomic_write_via(path: Path, write: Callable[[IO[str]], None],
                     mode: int | None = None) -> None:
    """Replace ``path`` with what ``write`` puts in a text handle: temporary file beside it,
    fsync, rename, fsync the folder. Readers see the old file or the new one, never a mix.

    The file keeps its mode, or gets ``mode`` (0644 for a new file by default); the temporary
    file is 0600 until then, so a secret is never readable by others on the way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_write_via`)."""
    atomic_write_via(path, lambda handle: handle.buffer.write(data),  # type: ignore[attr-defined]
                     mode)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def create_once(path: Path, text: str) -> bool:
    """Write ``path`` unless it exists, atomically: the text is written and fsynced beside it,
    then linked into place, so of two processes creating it at once exactly one wins and a
    reader never sees it half written. True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            return False  # another process was first: its file is the one
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def render_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """CSV text with ``\\n`` line endings, quoting only where needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def append_line(path: Path, line: str, max_bytes: int, keep: int = 5) -> None:
    """Append one line, rotating the file to ``.1`` … ``.keep`` when it passes ``max_bytes``.

    The caller holds the lock that guards ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size >= max_bytes:
        for index in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
