"""Logging, set up once at the entry point: a main log and one log per taxon (loguru).

Code logs with ``taxon_log(taxon_id).info(...)``; the record goes to the main log and to
``<log dir>/<taxon_id>.log``. One sink routes every taxon's records to its file, opened when
first written and kept in a small LRU of open handles: a loguru sink per taxon made each log
call test every sink's filter (10,000 taxa: 48 s to add the sinks, 7.7 ms a call, 10,000 open
files). The per-taxon files hold messages only, never a traceback (the public taxon page shows
them); tracebacks go to the main log, without variable values (``diagnose=False``: locals can
hold tokens). ``NO_COLOR`` turns colours off. Console output of the CLI stays plain ``print``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from loguru import logger

ROTATION_BYTES = 20_000_000
RETENTION = 10
#: Per-taxon files kept open at once; more taxa than this are reopened when written again.
OPEN_FILES = 64
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {message}"
CONSOLE_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"

_lock = threading.Lock()
_state: dict[str, Any] = {"router": None}


def no_color(environ: dict[str, str] | None = None) -> bool:
    """True when ``NO_COLOR`` is set to anything non-empty (https://no-color.org)."""
    return bool((os.environ if environ is None else environ).get("NO_COLOR"))


def setup_logging(log_dir: Path, *, json: bool = False, level: str = "INFO",
                  console: bool = False) -> None:
    """Route logs to ``<log_dir>/microfetch.log`` (and stderr when ``console``)."""
    level = level.upper()
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    with _lock:
        if _state["router"] is not None:
            _state["router"].close()
        router = _state["router"] = TaxonRouter(log_dir)
    if console:
        stream = sys.stderr
        colorize = False if no_color() else bool(getattr(stream, "isatty", lambda: False)())
        logger.add(stream, level=level, format=CONSOLE_FORMAT, colorize=colorize,
                   diagnose=False, backtrace=False)
    logger.add(
        log_dir / "microfetch.log", level=level, rotation=ROTATION_BYTES, retention=RETENTION,
        serialize=json, enqueue=False, encoding="utf-8", colorize=False, diagnose=False,
        backtrace=False,
    )
    # A callable format leaves out loguru's "{exception}", so no traceback reaches a taxon's
    # file; JSON lines carry the exception's type and value only.
    logger.add(router.write, level=level, serialize=json, colorize=False, diagnose=False,
               backtrace=False, format=lambda _record: TEXT_FORMAT + "\n",
               filter=lambda record: "taxon_id" in record["extra"])


def taxon_log(taxon_id: int) -> Any:
    """A logger bound to a taxon; its records also land in ``<log dir>/<taxon_id>.log``."""
    return logger.bind(taxon_id=taxon_id)


def taxon_log_path(log_dir: Path, taxon_id: int) -> Path:
    return Path(log_dir) / f"{taxon_id}.log"


def open_taxon_files() -> int:
    """How many per-taxon log files are open now (bounded by :data:`OPEN_FILES`)."""
    router = _state["router"]
    return len(router.handles) if router is not None else 0


class TaxonRouter:
    """The one sink of every taxon's records: append to ``<taxon>.log``, opened on demand.

    loguru calls a sink under the handler's lock, so ``write`` is never run twice at once.
    """

    def __init__(self, log_dir: Path, open_files: int = OPEN_FILES,
                 rotation_bytes: int = ROTATION_BYTES, retention: int = RETENTION) -> None:
        self.log_dir = Path(log_dir)
        self.open_files, self.rotation_bytes, self.retention = open_files, rotation_bytes, \
            retention
        self.handles: OrderedDict[int, IO[str]] = OrderedDict()

    def write(self, message: Any) -> None:
        taxon_id = message.record["extra"]["taxon_id"]
        try:
            handle = self._handle(int(taxon_id))
        except (TypeError, ValueError):
            return  # not a taxon id: the main log has the record anyway
        if handle.tell() >= self.rotation_bytes:
            self._rotate(int(taxon_id))
            handle = self._handle(int(taxon_id))
        handle.write(str(message))
        handle.flush()

    def _handle(self, taxon_id: int) -> IO[str]:
        handle = self.handles.get(taxon_id)
        if handle is not None:
            self.handles.move_to_end(taxon_id)
            return handle
        while len(self.handles) >= self.open_files:
            self.handles.popitem(last=False)[1].close()
        handle = open(taxon_log_path(self.log_dir, taxon_id), "a",  # noqa: SIM115 - LRU-owned
                      encoding="utf-8")
        self.handles[taxon_id] = handle
        return handle

    def _rotate(self, taxon_id: int) -> None:
        """``<taxon>.log`` becomes ``<taxon>.log.1`` (older ones shift up, the oldest goes)."""
        self.handles.pop(taxon_id).close()
        path = taxon_log_path(self.log_dir, taxon_id)
        for index in range(self.retention - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))

    def close(self) -> None:
        while self.handles:
            self.handles.popitem()[1].close()


# Secrets in text shown to people ------------------------------------------------------------


def elide_url(url: str) -> str:
    """``https://hooks.example.com/…``: a URL whose path (or query) is a credential, shown."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return "…"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def scrub(text: str, url: str) -> str:
    """``text`` with every appearance of the secret ``url``, or of its path, elided.

    Library errors quote URLs whole (``... for url: https://host/secret``) or by path only
    (``Max retries exceeded with url: /secret``).
    """
    if not url:
        return text
    parts = urlsplit(url)
    secret_path = parts.path + (f"?{parts.query}" if parts.query else "")
    text = text.replace(url, elide_url(url))
    if secret_path.strip("/"):
        text = re.sub(re.escape(secret_path) + r"\S*", "/…", text)
    return text
