"""The taxon registry, ``microfetch.csv``: typed rows, one lock discipline, a history log.

Nothing else reads or writes the file. A change happens inside :meth:`Registry.transaction`,
which holds the lock, re-reads the file, lets the caller change typed rows, then writes the
file atomically and appends one history line per changed field.
"""

from __future__ import annotations

import copy
import csv
import getpass
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from backend.errors import RegistryError, UnknownTaxonError, UsageError
from backend.state.statefile import append_line, atomic_write_text, locked, render_csv
from backend.state.store import Database, database_of
from backend.timeutil import format_time, parse_time, utc_now

MAX_TAXON_ID = 2_147_483_647
#: Priorities are whole numbers within this bound (a CSV cell, sorted as an integer).
MAX_PRIORITY = 1_000_000_000


class Stage(StrEnum):
    """The next job to run for a taxon."""

    CHECK = "check"
    FILTER = "filter"
    DISPATCH = "dispatch"
    WAIT = "wait"
    COLLECT = "collect"

    @property
    def label(self) -> str:
        return _STAGE_NAMES[self]


_STAGE_NAMES = {
    Stage.CHECK: "check ENA for runs",
    Stage.FILTER: "select runs",
    Stage.DISPATCH: "start workers",
    Stage.WAIT: "workers fetching",
    Stage.COLLECT: "collect data",
}


class Status(StrEnum):
    """``last_run_status``: how the last pass of a taxon went."""

    NEW = ""
    IN_PROGRESS = "in progress"
    READY = "ready"
    COMPLETE = "complete"
    WARNING = "warning"
    ERROR = "error"


COLUMNS = (
    "taxonomy_id",
    "scientific_name",
    "last_checked",
    "droplet_ips",
    "last_run_status",
    "needs_attention",
    "stage",
    "stage_name",
    "priority",
    "generated_warning",
)


def parse_taxon_id(text: str) -> int:
    """A taxonomy id from text; ValueError says why it is not one."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty, expected a positive whole number")
    if not stripped.lstrip("+-").isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    value = int(stripped)
    if value <= 0:
        raise ValueError(f"{text!r} is not positive; taxonomy ids start at 1")
    if value > MAX_TAXON_ID:
        raise ValueError(f"{text!r} is larger than {MAX_TAXON_ID}, the largest taxonomy id")
    return value


@dataclass
class Taxon:
    """One registry row, typed."""

    taxonomy_id: int
    scientific_name: str = ""
    last_checked: datetime | None = None
    droplet_ips: tuple[str, ...] = ()
    last_run_status: Status = Status.NEW
    needs_attention: str = ""
    stage: Stage = Stage.CHECK
    priority: int = 0
    generated_warning: bool = False

    @property
    def stage_name(self) -> str:
        return self.stage.label

    def to_text(self) -> dict[str, str]:
        """The row's text forms, as written to the CSV."""
        return {
            "taxonomy_id": str(self.taxonomy_id),
            "scientific_name": self.scientific_name,
            "last_checked": format_time(self.last_checked),
            "droplet_ips": " ".join(self.droplet_ips),
            "last_run_status": self.last_run_status.value,
            "needs_attention": self.needs_attention,
            "stage": self.stage.value,
            "stage_name": self.stage_name,
            "priority": str(self.priority),
            "generated_warning": str(self.generated_warning),
        }

    def to_json(self) -> dict[str, Any]:
        """Typed JSON: numbers, a boolean, a list of addresses, strings otherwise."""
        values: dict[str, Any] = self.to_text()
        values["taxonomy_id"] = self.taxonomy_id
        values["priority"] = self.priority
        values["generated_warning"] = self.generated_warning
        values["droplet_ips"] = list(self.droplet_ips)
        return values

    @classmethod
    def from_text(cls, values: dict[str, str]) -> Taxon:
        """Parse one row; ValueError names the column and the problem."""
        return cls(
            taxonomy_id=_column("taxonomy_id", values, parse_taxon_id),
            scientific_name=values.get("scientific_name", "").strip(),
            last_checked=_column("last_checked", values, parse_time),
            droplet_ips=tuple(values.get("droplet_ips", "").split()),
            last_run_status=_column("last_run_status", values, _status),
            needs_attention=values.get("needs_attention", "").strip(),
            stage=_column("stage", values, _stage),
            priority=_column("priority", values, _priority),
            generated_warning=_column("generated_warning", values, _flag),
        )


def _column(name: str, values: dict[str, str], parse: Any) -> Any:
    text = values.get(name, "")
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"column {name} has {text!r}: {exc}") from None


def _status(text: str) -> Status:
    try:
        return Status(text.strip())
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in Status)
        raise ValueError(f"expected one of {allowed}") from None


def _stage(text: str) -> Stage:
    if not text.strip():
        return Stage.CHECK
    try:
        return Stage(text.strip())
    except ValueError:
        raise ValueError("expected one of " + ", ".join(s.value for s in Stage)) from None


def _priority(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not text.lstrip("+-").isdigit():
        raise ValueError("expected a whole number")
    return int(text)


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"", "false"}:
        return False
    if lowered == "true":
        return True
    raise ValueError("expected True or False")


def default_actor() -> str:
    """Who is changing the registry: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Table(dict[int, Taxon]):
    """The rows inside a transaction, by taxonomy id, in file order."""

    def __init__(self, rows: list[Taxon], path: Path) -> None:
        super().__init__((row.taxonomy_id, row) for row in rows)
        self.path = path

    def row(self, taxon_id: int) -> Taxon:
        if taxon_id not in self:
            raise UnknownTaxonError(taxon_id, self.path)
        return self[taxon_id]


@dataclass(frozen=True)
class _Parsed:
    key: tuple[int, ...]
    rows: list[Taxon]
    texts: dict[int, dict[str, str]]
    outdated: bool


#: The last parse of each registry file (see :meth:`Registry._parsed`).
_PARSED: dict[str, _Parsed] = {}


class Registry:
    """Reads and changes ``microfetch.csv`` under the lock discipline of :mod:`statefile`.

    History rows live in the state database. A change writes them first, marked with the
    batch of the file write they belong to, then replaces the file, then clears the mark; a
    crash in between is repaired by the next writer, which keeps the rows when the file on
    disk is the one they describe and drops them otherwise. They never diverge.
    """

    def __init__(self, path: Path, db: Database, history_path: Path | None = None,
                 history_max_bytes: int = 10_000_000) -> None:
        self.path = Path(path)
        self.db = db
        self.history_path = Path(history_path) if history_path else None
        self.history_max_bytes = history_max_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> Registry:
        return cls(settings.csv_path, database_of(settings), settings.history_path,
                   settings.history_max_bytes)

    # Reading -------------------------------------------------------------------------------

    def load(self) -> list[Taxon]:
        """Every row, in file order; an empty list when the file does not exist yet."""
        return [copy.copy(row) for row in self._parsed().rows]

    def count(self) -> int:
        """How many taxa (``/healthz`` asks often: the file is parsed only when it changed)."""
        return len(self._parsed().rows)

    def get(self, taxon_id: int) -> Taxon:
        for row in self.load():
            if row.taxonomy_id == taxon_id:
                return row
        raise UnknownTaxonError(taxon_id, self.path)

    def _parsed(self) -> _Parsed:
        """The file's rows and their text forms, parsed once per version of the file.

        A version is its (mtime, size, inode): every write is a rename, so a new inode. The
        rows handed out are copies (their fields are immutable), so callers may change them.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return _Parsed((), [], {}, True)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = _PARSED.get(str(self.path))
        if cached is None or cached.key != key:
            rows, outdated = self._read()
            cached = _Parsed(key, rows, {r.taxonomy_id: r.to_text() for r in rows}, outdated)
            _PARSED[str(self.path)] = cached
        return cached

    def _read(self) -> tuple[list[Taxon], bool]:
        """Rows and whether the header lacks columns (an older file)."""
        if not self.path.exists():
            return [], True
        with self._open() as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return [], True
            header = [name.strip() for name in header]
            self._check_header(header)
            rows: list[Taxon] = []
            seen: dict[int, int] = {}
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue
                line = reader.line_num
                if len(record) != len(header):
                    raise RegistryError(
                        self.path, line,
                        f"has {len(record)} fields but the header has {len(header)}",
                    )
                try:
                    taxon = Taxon.from_text(dict(zip(header, record, strict=True)))
                except ValueError as exc:
                    raise RegistryError(self.path, line, str(exc)) from None
                if taxon.taxonomy_id in seen:
                    raise RegistryError(
                        self.path, line,
                        f"taxonomy_id {taxon.taxonomy_id} is already on line "
                        f"{seen[taxon.taxonomy_id]}",
                    )
                seen[taxon.taxonomy_id] = line
                rows.append(taxon)
        return rows, tuple(header) != COLUMNS

    def _open(self) -> TextIO:
        try:
            return open(self.path, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError) -> UsageError:
        return UsageError(
            f"cannot read the registry {self.path}: {exc.strerror or exc}. Set MICROFETCH_CSV "
            "to a CSV file this user can read and write (it is created when missing)"
        )

    def _check_header(self, header: list[str]) -> None:
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            raise RegistryError(
                self.path, 1,
                f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}",
            )
        if "taxonomy_id" not in header:
            raise RegistryError(self.path, 1, "the header has no taxonomy_id column")
        duplicated = {name for name in header if header.count(name) > 1}
        if duplicated:
            raise RegistryError(self.path, 1, f"column(s) {', '.join(duplicated)} appear twice")

    # Writing -------------------------------------------------------------------------------

    def ensure_ready(self) -> bool:
        """Create a missing file with the header; give an older file the newer columns.

        Returns True when the file was created (callers tell the person which file it is).
        """
        if self.path.exists() and (self.path.is_dir() or self.path.stat().st_size > 0):
            with self._open() as handle:  # the header alone says whether columns are missing
                header = next(csv.reader(handle), None)
            if header is not None and tuple(name.strip() for name in header) == COLUMNS:
                return False
        try:
            with locked(self.path):
                created = not self.path.exists()
                rows, outdated = self._read()
                if outdated or created:
                    self._write(rows)
        except OSError as exc:
            raise self._unusable(exc) from None
        return created

    @contextmanager
    def transaction(self, actor: str | None = None) -> Iterator[Table]:
        """Lock, re-read, let the caller change rows, then write and record history.

        An exception inside the block, or a value of the wrong type, leaves the file untouched.
        """
        with locked(self.path):
            self._repair_history()
            parsed = self._parsed()
            originals = {row.taxonomy_id: row for row in parsed.rows}
            before = parsed.texts
            table = Table([copy.copy(row) for row in parsed.rows], self.path)
            yield table
            after = {taxon_id: before[taxon_id] if row == originals.get(taxon_id)
                     else _checked(row).to_text() for taxon_id, row in table.items()}
            changes = _diff(before, after)
            if not (changes or parsed.outdated):
                return
            text = render_csv(COLUMNS, [[values[c] for c in COLUMNS] for values in
                                        after.values()])
            batch = self._open_batch(changes, actor or default_actor(), text) if changes \
                else None
            atomic_write_text(self.path, text)
            if batch is not None:
                self._close_batch(batch)

    def update(self, taxon_id: int, actor: str | None = None, **changes: Any) -> Taxon:
        """Change fields of one row; returns the row as written."""
        with self.transaction(actor) as table:
            row = table.row(taxon_id)
            for name, value in changes.items():
                if not hasattr(row, name) or name == "taxonomy_id":
                    raise AttributeError(f"registry rows have no settable field {name!r}")
                setattr(row, name, value)
            return replace(row)

    def _write(self, rows: list[Taxon]) -> None:
        text = render_csv(COLUMNS, [[row.to_text()[c] for c in COLUMNS] for row in rows])
        atomic_write_text(self.path, text)

    # History -------------------------------------------------------------------------------

    def _open_batch(self, changes: list[dict[str, Any]], actor: str,
                    text: str) -> tuple[str, list[dict[str, Any]]]:
        """Write the history rows of a file write about to happen, marked open."""
        batch = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return batch, self._insert(changes, actor, batch)

    def _close_batch(self, batch: tuple[str, list[dict[str, Any]]]) -> None:
        with self.db.write() as con:
            con.execute("UPDATE history SET batch = NULL WHERE batch = ?", (batch[0],))
        self._export(batch[1])

    def _repair_history(self) -> None:
        """Settle batches a crash left open (the caller holds the registry lock)."""
        open_batches = [row[0] for row in self.db.query(
            "SELECT DISTINCT batch FROM history WHERE batch IS NOT NULL")]
        if not open_batches:
            return
        current = hashlib.sha256(self.path.read_bytes()).hexdigest() \
            if self.path.is_file() else ""
        with self.db.write() as con:
            for batch in open_batches:
                if batch == current:  # the file was written: its history stands
                    con.execute("UPDATE history SET batch = NULL WHERE batch = ?", (batch,))
                else:  # the write never happened: neither did its history
                    con.execute("DELETE FROM history WHERE batch = ?", (batch,))

    def _insert(self, changes: list[dict[str, Any]], actor: str,
                batch: str | None) -> list[dict[str, Any]]:
        entries = [{"time": format_time(utc_now()), **c, "actor": actor} for c in changes]
        with self.db.write() as con:
            con.executemany(
                "INSERT INTO history (time, taxon, field, old, new, actor, batch) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e["time"], e["taxon"], e["field"], json.dumps(e["old"]), json.dumps(e["new"]),
                  actor, batch) for e in entries])
        return entries

    def _export(self, entries: list[dict[str, Any]]) -> None:
        """Append to the JSON-lines history, for people who tail it."""
        if self.history_path is None:
            return
        with locked(self.history_path):
            for entry in entries:
                append_line(self.history_path, json.dumps(entry), self.history_max_bytes)

    def note(self, taxon_id: int, event: str, value: Any, actor: str | None = None) -> None:
        """Record an event that is not a column change (a cost estimate, an alert sent)."""
        changes = [{"taxon": taxon_id, "field": event, "old": None, "new": value}]
        self._export(self._insert(changes, actor or default_actor(), None))

    def history(self, taxon_id: int | None = None, limit: int = 200,
                before: int | None = None) -> list[dict[str, Any]]:
        """The newest history entries (of one taxon), oldest first; ``before`` pages back
        by entry id."""
        where = ["batch IS NULL"]
        params: list[Any] = []
        if taxon_id is not None:
            where.append("taxon = ?")
            params.append(taxon_id)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        rows = self.db.query(
            f"SELECT id, time, taxon, field, old, new, actor FROM history "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_entry(row[1:]) | {"id": row[0]} for row in reversed(rows)]


def _entry(row: Any) -> dict[str, Any]:
    time, taxon, field, old, new, actor = row
    return {"time": time, "taxon": taxon, "field": field, "old": json.loads(old or "null"),
            "new": json.loads(new or "null"), "actor": actor}


def _checked(row: Taxon) -> Taxon:
    """Refuse a value of the wrong type before it reaches the file (it could not be read)."""
    expect = {"scientific_name": str, "needs_attention": str, "droplet_ips": tuple}
    problems = [f"{name} must be {kind.__name__}, not {getattr(row, name)!r}"
                for name, kind in expect.items() if not isinstance(getattr(row, name), kind)]
    if type(row.priority) is not int:  # bool is an int subclass: refuse it too
        problems.append(f"priority must be a whole number, not {row.priority!r}")
    elif abs(row.priority) > MAX_PRIORITY:
        problems.append(f"priority {row.priority} is outside ±{MAX_PRIORITY}")
    if type(row.generated_warning) is not bool:
        problems.append(f"generated_warning must be True or False, not {row.generated_warning!r}")
    if not isinstance(row.stage, Stage) or not isinstance(row.last_run_status, Status):
        problems.append("stage and last_run_status must be a Stage and a Status")
    if row.last_checked is not None and not isinstance(row.last_checked, datetime):
        problems.append(f"last_checked must be a time, not {row.last_checked!r}")
    if problems:
        raise UsageError(f"taxon {row.taxonomy_id}: " + "; ".join(problems)
                         + ". Nothing was changed.")
    return row


def _diff(before: dict[int, dict[str, str]],
          after: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
    """History entries, one per added row, removed row and changed field."""
    changes: list[dict[str, Any]] = []
    for taxon_id, new_text in after.items():
        old_text = before.get(taxon_id)
        if old_text is None:
            changes.append({"taxon": taxon_id, "field": "row", "old": None, "new": new_text})
            continue
        for name in COLUMNS:
            if old_text[name] != new_text[name]:
                changes.append(
                    {"taxon": taxon_id, "field": name, "old": old_text[name], "new": new_text[name]}
                )
    for taxon_id, old_text in before.items():
        if taxon_id not in after:
            changes.append({"taxon": taxon_id, "field": "row", "old": old_text, "new": None})
    return changes
