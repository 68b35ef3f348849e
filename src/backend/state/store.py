"""The state database: runs, workers and history in one SQLite file.

WAL mode, a busy timeout and short ``BEGIN IMMEDIATE`` transactions: writers in several
processes (the daemon, cron ticks, the CLI) queue for the write lock instead of failing, and
readers never wait. Counts the pages and metrics show are kept by triggers in ``run_counts``,
so no page scans a taxon's runs. The file must sit on a local disk: SQLite's locking is not
reliable on network filesystems (NFS, SMB), where two writers could corrupt it.

A data directory written by the release before this one (CSV accession lists, worker JSON
records, ``history.jsonl``) is imported the first time any command opens the database, in one
transaction: an interrupted import leaves nothing behind and runs again next time.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

from backend.errors import OperationError

#: How long a writer waits for another process's write transaction before failing.
BUSY_TIMEOUT_SECONDS = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY,            -- insertion order: the order of the CSV export
    taxon INTEGER NOT NULL,
    accession TEXT NOT NULL,
    is_excluded INTEGER NOT NULL DEFAULT 0,
    droplet_ip TEXT NOT NULL DEFAULT '',
    exclusion_reason TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'pending',
    worker TEXT NOT NULL DEFAULT '',
    fastq_files TEXT NOT NULL DEFAULT '',
    fastq_bytes TEXT NOT NULL DEFAULT '',
    fastq_md5 TEXT NOT NULL DEFAULT '',
    total_bytes INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    fetched_at TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT 'pending',  -- what pages count: see accessions.category
    assembly_status TEXT NOT NULL DEFAULT '',
    assembly_path TEXT NOT NULL DEFAULT '',
    assembly_md5 TEXT NOT NULL DEFAULT '',
    contigs INTEGER,
    total_length INTEGER,
    n50 INTEGER,
    assembly_error TEXT NOT NULL DEFAULT '',
    given_up_at TEXT NOT NULL DEFAULT '',   -- excluded for failed attempts at
    rounds INTEGER NOT NULL DEFAULT 0,      -- extra rounds given after a cool-off
    UNIQUE (taxon, accession)
);
CREATE INDEX IF NOT EXISTS runs_in_order ON runs (taxon, seq);
CREATE INDEX IF NOT EXISTS runs_by_category ON runs (taxon, category, seq);
CREATE INDEX IF NOT EXISTS runs_by_accession ON runs (accession);
CREATE INDEX IF NOT EXISTS runs_by_worker ON runs (worker) WHERE worker != '';
CREATE INDEX IF NOT EXISTS runs_with_errors ON runs (taxon, seq) WHERE last_error != '';

CREATE TABLE IF NOT EXISTS run_counts (
    taxon INTEGER NOT NULL,
    category TEXT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (taxon, category)
);

CREATE TRIGGER IF NOT EXISTS runs_counted_in AFTER INSERT ON runs BEGIN
    INSERT INTO run_counts (taxon, category, runs, bytes)
        VALUES (new.taxon, new.category, 1, new.total_bytes)
        ON CONFLICT (taxon, category) DO UPDATE
        SET runs = runs + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS runs_counted_out AFTER DELETE ON runs BEGIN
    UPDATE run_counts SET runs = runs - 1, bytes = bytes - old.total_bytes
        WHERE taxon = old.taxon AND category = old.category;
END;
CREATE TRIGGER IF NOT EXISTS runs_recounted AFTER UPDATE OF category, total_bytes ON runs
BEGIN
    UPDATE run_counts SET runs = runs - 1, bytes = bytes - old.total_bytes
        WHERE taxon = old.taxon AND category = old.category;
    INSERT INTO run_counts (taxon, category, runs, bytes)
        VALUES (new.taxon, new.category, 1, new.total_bytes)
        ON CONFLICT (taxon, category) DO UPDATE
        SET runs = runs + 1, bytes = bytes + excluded.bytes;
END;

CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    taxon INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    backend TEXT NOT NULL,
    phase TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT '',
    record TEXT NOT NULL                -- the whole record as JSON
);
CREATE INDEX IF NOT EXISTS workers_live ON workers (phase) WHERE phase != 'destroyed';
CREATE INDEX IF NOT EXISTS workers_by_taxon ON workers (taxon, chunk);

CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    taxon INTEGER,
    field TEXT NOT NULL,
    old TEXT,                           -- JSON
    new TEXT,                           -- JSON
    actor TEXT NOT NULL,
    batch TEXT                          -- set while the registry write it belongs to is open
);
CREATE INDEX IF NOT EXISTS history_by_taxon ON history (taxon, id);
CREATE TABLE IF NOT EXISTS taxon_updates (taxon INTEGER PRIMARY KEY, time TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS history_touches_taxon AFTER INSERT ON history
WHEN new.taxon IS NOT NULL BEGIN
    INSERT INTO taxon_updates (taxon, time) VALUES (new.taxon, new.time)
        ON CONFLICT (taxon) DO UPDATE SET time = excluded.time;
END;
CREATE INDEX IF NOT EXISTS history_open ON history (batch) WHERE batch IS NOT NULL;

CREATE TABLE IF NOT EXISTS fetch_events (
    id INTEGER PRIMARY KEY,
    taxon INTEGER NOT NULL,
    at TEXT NOT NULL,
    runs INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fetch_events_by_time ON fetch_events (at);
CREATE INDEX IF NOT EXISTS fetch_events_by_taxon ON fetch_events (taxon, at);
"""


class Database:
    """One SQLite file, a connection per thread, short write transactions."""

    def __init__(self, path: Path, data_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.data_dir = Path(data_dir) if data_dir is not None else self.path.parent
        self._local = threading.local()
        self._ready = threading.Lock()
        self._prepared = False
        self._ensured: set[str] = set()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, with the schema in place and old files imported."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
            with self._ready:
                if not self._prepared:
                    self._prepare(con)
                    self._prepared = True
        return con

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise OperationError(
                f"cannot open the state database {self.path}: {exc}. Set MICROFETCH_DB to a "
                "file on a local disk this user can write"
            ) from None
        con.execute("PRAGMA synchronous=FULL")  # a commit survives a crash of the machine too
        con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        con.row_factory = sqlite3.Row
        return con

    def _prepare(self, con: sqlite3.Connection) -> None:
        con.executescript(SCHEMA)
        _add_missing_columns(con)
        from backend.state.legacy import import_legacy_files

        import_legacy_files(self)

    def ensure(self, schema: str) -> Database:
        """This database with a module's own tables in place (``CREATE ... IF NOT EXISTS``
        statements), made once per process rather than on every use. A statement at a time:
        ``executescript`` would first commit a transaction the caller has open."""
        if schema not in self._ensured:
            con, statement = self.connection(), ""
            for line in schema.splitlines(keepends=True):
                statement += line
                if sqlite3.complete_statement(statement):
                    con.execute(statement)
                    statement = ""
            if statement.strip():  # the last statement needs no `;`
                con.execute(statement)
            self._ensured.add(schema)
        return self

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it commits, or none of it."""
        con = self.connection()
        if con.in_transaction:  # nested: part of the caller's transaction
            yield con
            return
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise OperationError(
                f"the state database {self.path} stayed locked by another microfetch process "
                f"for {BUSY_TIMEOUT_SECONDS:.0f} s ({exc}); check for a stuck process"
            ) from None
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def tuples(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        """:meth:`query` with plain tuples: for many rows, a :class:`sqlite3.Row` each costs."""
        cursor = self.connection().cursor()
        cursor.row_factory = None
        return cursor.execute(sql, params).fetchall()

    def meta(self, key: str) -> str | None:
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,))
        found = row.fetchone()
        return found[0] if found else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as con:
            con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                        "UPDATE SET value = excluded.value", (key, value))

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


#: Columns added after a table was first made: (table, column declaration).
ADDED_COLUMNS = (
    ("runs", "assembly_status TEXT NOT NULL DEFAULT ''"),
    ("runs", "assembly_path TEXT NOT NULL DEFAULT ''"),
    ("runs", "assembly_md5 TEXT NOT NULL DEFAULT ''"),
    ("runs", "contigs INTEGER"),
    ("runs", "total_length INTEGER"),
    ("runs", "n50 INTEGER"),
    ("runs", "assembly_error TEXT NOT NULL DEFAULT ''"),
    ("runs", "given_up_at TEXT NOT NULL DEFAULT ''"),
    ("runs", "rounds INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(con: sqlite3.Connection) -> None:
    """A database made before a column existed gains it (``CREATE TABLE IF NOT EXISTS`` does
    not change a table that is there)."""
    for table, declaration in ADDED_COLUMNS:
        have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        if declaration.split()[0] not in have:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {declaration}")


_OPEN: dict[Path, Database] = {}
_OPEN_LOCK = threading.Lock()


def open_database(path: Path, data_dir: Path | None = None) -> Database:
    """The process's one :class:`Database` for ``path``."""
    key = Path(path).resolve()
    with _OPEN_LOCK:
        database = _OPEN.get(key)
        if database is None:
            database = _OPEN[key] = Database(key, data_dir)
        return database


def database_of(settings: Any) -> Database:
    """The state database the settings name."""
    return open_database(settings.db_path, settings.data_dir)


def log_import(what: str, count: int, source: Path) -> None:
    logger.info("imported {} {} from {}", count, what, source)
