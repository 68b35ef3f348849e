"""Worker records, ``workers/<name>.json``: one per worker, changed under the lock discipline.

A record is written *before* the worker is started (claim before acting), so a worker created
just before a crash is found again by its name and tags, never leaked and never duplicated.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from backend.errors import UsageError
from backend.statefile import locked, read_json, write_json
from backend.timeutil import format_time, parse_time

NAME_PATTERN = re.compile(r"^mf-(?P<taxon>\d+)-(?P<chunk>\d+)-(?P<suffix>[0-9a-f]{6})$")


class Phase(StrEnum):
    """Where a worker is in its life, as the home side sees it."""

    CLAIMED = "claimed"        # record written, backend not yet asked
    STARTING = "starting"      # backend asked to start it
    RUNNING = "running"        # chunk runner started
    DONE = "done"              # callback received or DONE.json seen
    COLLECTING = "collecting"  # pulling and verifying
    HELD = "held"              # verification failed at home: kept for a person
    DESTROYED = "destroyed"    # gone; the record is kept briefly for the dashboard


def worker_name(taxon_id: int, chunk: int, suffix: str | None = None) -> str:
    """``mf-<taxon>-<chunk>-<6 hex>``: letters, digits and dashes, valid as a droplet name."""
    return f"mf-{taxon_id}-{chunk}-{suffix or secrets.token_hex(3)}"


def parse_worker_name(name: str) -> tuple[int, int]:
    """(taxon, chunk) from a worker name; UsageError when it is not one."""
    match = NAME_PATTERN.match(name)
    if not match:
        raise UsageError(f"{name!r} is not a worker name (expected mf-<taxon>-<chunk>-<6 hex>)")
    return int(match["taxon"]), int(match["chunk"])


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class WorkerRecord:
    """What home knows of one worker."""

    name: str
    backend: str
    taxon_id: int
    chunk: int
    runs: list[str]
    bytes: int
    token_sha256: str
    created_at: datetime
    phase: Phase = Phase.CLAIMED
    address: str = ""
    host: str = ""                 # ssh backend: the host entry (user@host:port)
    droplet_id: int | None = None
    host_key: str = ""             # pinned public host key, "ssh-ed25519 AAAA..."
    remote_dir: str = ""           # the worker folder on the worker
    callback: dict[str, Any] | None = None
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["created_at"] = format_time(self.created_at)
        values["phase"] = self.phase.value
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> WorkerRecord:
        values = dict(values)
        values["created_at"] = parse_time(values["created_at"])
        values["phase"] = Phase(values.get("phase", "claimed"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


class WorkerStore:
    """All worker records under ``<data dir>/workers/``."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "workers"

    def path(self, name: str) -> Path:
        parse_worker_name(name)  # names become paths: refuse anything else
        return self.folder / f"{name}.json"

    def get(self, name: str) -> WorkerRecord | None:
        path = self.path(name)
        return WorkerRecord.from_json(read_json(path)) if path.exists() else None

    def all(self) -> list[WorkerRecord]:
        if not self.folder.exists():
            return []
        records = []
        for path in sorted(self.folder.glob("mf-*.json")):
            try:
                records.append(WorkerRecord.from_json(read_json(path)))
            except FileNotFoundError:
                continue  # removed while listing
        return records

    def live(self) -> list[WorkerRecord]:
        return [r for r in self.all() if r.phase is not Phase.DESTROYED]

    def create(self, record: WorkerRecord) -> None:
        path = self.path(record.name)
        with locked(path):
            if path.exists():
                raise UsageError(f"worker record {record.name} already exists")
            write_json(path, record.to_json())

    def save(self, record: WorkerRecord) -> None:
        """Write a record a caller holds (a backend filling in what it created)."""
        path = self.path(record.name)
        with locked(path):
            write_json(path, record.to_json())

    def next_chunk(self, taxon_id: int) -> int:
        """A chunk number not used before for this taxon (records are kept after destroy)."""
        used = [r.chunk for r in self.all() if r.taxon_id == taxon_id]
        return max(used, default=-1) + 1

    @contextmanager
    def edit(self, name: str) -> Iterator[WorkerRecord]:
        """Lock, re-read, let the caller change the record, write it atomically."""
        path = self.path(name)
        with locked(path):
            record = WorkerRecord.from_json(read_json(path))
            yield record
            write_json(path, record.to_json())

    def delete(self, name: str) -> None:
        path = self.path(name)
        with locked(path):
            path.unlink(missing_ok=True)
