"""Worker records: one per worker, a row of the state database.

A record is written *before* the worker is started (claim before acting), so a worker created
just before a crash is found again by its name and tags, never leaked and never duplicated.
Records of destroyed workers are kept a while for the pages, then pruned.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from backend.errors import UsageError
from backend.state.store import Database, database_of
from backend.timeutil import format_time, parse_time, utc_now

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
    phase_since: datetime | None = None  # set by the store when the phase changes

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["created_at"] = format_time(self.created_at)
        values["phase_since"] = format_time(self.phase_since)
        values["phase"] = self.phase.value
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> WorkerRecord:
        values = dict(values)
        values["created_at"] = parse_time(values["created_at"])
        values["phase_since"] = parse_time(values.get("phase_since") or "")
        values["phase"] = Phase(values.get("phase", "claimed"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


class WorkerStore:
    """All worker records, in the state database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: Lock files of collections in progress (one per worker) live here.
        self.folder = db.data_dir / "workers"

    @classmethod
    def of(cls, settings: Any) -> WorkerStore:
        return cls(database_of(settings))

    def get(self, name: str) -> WorkerRecord | None:
        parse_worker_name(name)
        rows = self.db.query("SELECT record FROM workers WHERE name = ?", (name,))
        return _record(rows[0][0]) if rows else None

    def all(self) -> list[WorkerRecord]:
        return [_record(row[0]) for row in self.db.query("SELECT record FROM workers "
                                                         "ORDER BY name")]

    def live(self) -> list[WorkerRecord]:
        """Every worker not yet destroyed (an index keeps this fast however many were)."""
        return [_record(row[0]) for row in self.db.query(
            "SELECT record FROM workers WHERE phase != 'destroyed' ORDER BY name")]

    def live_count(self, con: sqlite3.Connection | None = None) -> int:
        con = con or self.db.connection()
        return con.execute("SELECT count(*) FROM workers WHERE phase != 'destroyed'"
                           ).fetchone()[0]

    def create(self, record: WorkerRecord) -> None:
        with self.db.write() as con:
            if con.execute("SELECT 1 FROM workers WHERE name = ?", (record.name,)).fetchone():
                raise UsageError(f"worker record {record.name} already exists")
            _put(con, record)

    def save(self, record: WorkerRecord) -> None:
        """Write a record a caller holds (a backend filling in what it created)."""
        with self.db.write() as con:
            _put(con, record)

    def next_chunk(self, taxon_id: int, con: sqlite3.Connection | None = None) -> int:
        """A chunk number not used before for this taxon (records are kept after destroy)."""
        con = con or self.db.connection()
        used = con.execute("SELECT max(chunk) FROM workers WHERE taxon = ?",
                           (taxon_id,)).fetchone()[0]
        return 0 if used is None else used + 1

    @contextmanager
    def edit(self, name: str) -> Iterator[WorkerRecord]:
        """One transaction: re-read, let the caller change the record, write it."""
        parse_worker_name(name)
        with self.db.write() as con:
            row = con.execute("SELECT record FROM workers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UsageError(f"no worker record {name}")
            record = _record(row[0])
            yield record
            _put(con, record)

    def delete(self, name: str) -> None:
        with self.db.write() as con:
            con.execute("DELETE FROM workers WHERE name = ?", (name,))

    def prune(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Forget destroyed workers last changed before ``now - older_than``."""
        cutoff = format_time((now or utc_now()) - older_than)
        with self.db.write() as con:
            return con.execute("DELETE FROM workers WHERE phase = 'destroyed' AND "
                               "updated_at < ?", (cutoff,)).rowcount


def _record(text: str) -> WorkerRecord:
    return WorkerRecord.from_json(json.loads(text))


def _put(con: sqlite3.Connection, record: WorkerRecord) -> None:
    old = con.execute("SELECT phase FROM workers WHERE name = ?", (record.name,)).fetchone()
    if old is None or old[0] != record.phase.value or record.phase_since is None:
        record.phase_since = utc_now()
    con.execute(
        "INSERT INTO workers (name, taxon, chunk, backend, phase, updated_at, record) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET phase = excluded.phase, "
        "backend = excluded.backend, updated_at = excluded.updated_at, record = excluded.record",
        (record.name, record.taxon_id, record.chunk, record.backend, record.phase.value,
         format_time(utc_now()), json.dumps(record.to_json(), sort_keys=True)))
