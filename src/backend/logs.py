"""Logging, set up once at the entry point: a main log and one log per taxon (loguru).

Code logs with ``taxon_log(taxon_id).info(...)``; the record goes to the main log and to
``<log dir>/<taxon_id>.log``. Console output of the CLI stays plain ``print``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from loguru import logger

ROTATION = "20 MB"
RETENTION = 10

_lock = threading.Lock()
_state: dict[str, Any] = {"log_dir": None, "json": False, "level": "INFO", "taxa": set()}


def setup_logging(log_dir: Path, *, json: bool = False, level: str = "INFO",
                  console: bool = False) -> None:
    """Route logs to ``<log_dir>/microfetch.log`` (and stderr when ``console``)."""
    level = level.upper()
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    if console:
        logger.add(sys.stderr, level=level, format="{time:HH:mm:ss} {level: <7} {message}")
    logger.add(
        log_dir / "microfetch.log", level=level, rotation=ROTATION, retention=RETENTION,
        serialize=json, enqueue=False, encoding="utf-8",
    )
    with _lock:
        _state.update(log_dir=log_dir, json=json, level=level, taxa=set())


def taxon_log(taxon_id: int) -> Any:
    """A logger bound to a taxon; its records also land in ``<log dir>/<taxon_id>.log``."""
    with _lock:
        if _state["log_dir"] is not None and taxon_id not in _state["taxa"]:
            _state["taxa"].add(taxon_id)
            logger.add(
                Path(_state["log_dir"]) / f"{taxon_id}.log",
                level=_state["level"], rotation=ROTATION, retention=RETENTION,
                serialize=_state["json"], encoding="utf-8",
                filter=lambda record, tid=taxon_id: record["extra"].get("taxon_id") == tid,
            )
    return logger.bind(taxon_id=taxon_id)


def taxon_log_path(log_dir: Path, taxon_id: int) -> Path:
    return Path(log_dir) / f"{taxon_id}.log"
