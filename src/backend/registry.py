"""The taxon registry, ``microfetch.csv``: typed rows, one lock discipline, a history log.

Nothing else reads or writes the file. A change happens inside :meth:`Registry.transaction`,
which holds the lock, re-reads the file, lets the caller change typed rows, then writes the
file atomically and appends one history line per changed field.
"""

from __future__ import annotations

import copy
import csv
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from backend.errors import RegistryError, UnknownTaxonError, UsageError
from backend.statefile import append_line, atomic_write_text, locked, render_csv
from backend.timeutil import format_time, parse_time, utc_now

MAX_TAXON_ID = 2_147_483_647


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


class Registry:
    """Reads and changes ``microfetch.csv`` under the lock discipline of :mod:`statefile`."""

    def __init__(self, path: Path, history_path: Path, history_max_bytes: int = 10_000_000):
        self.path = Path(path)
        self.history_path = Path(history_path)
        self.history_max_bytes = history_max_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> Registry:
        return cls(settings.csv_path, settings.history_path, settings.history_max_bytes)

    # Reading -------------------------------------------------------------------------------

    def load(self) -> list[Taxon]:
        """Every row, in file order; an empty list when the file does not exist yet."""
        return self._read()[0]

    def get(self, taxon_id: int) -> Taxon:
        for row in self.load():
            if row.taxonomy_id == taxon_id:
                return row
        raise UnknownTaxonError(taxon_id, self.path)

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
            rows, outdated = self._read()
            if not outdated:
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

        An exception inside the block leaves the file untouched.
        """
        with locked(self.path):
            rows, outdated = self._read()
            before = {row.taxonomy_id: copy.deepcopy(row) for row in rows}
            table = Table(rows, self.path)
            yield table
            changes = _diff(before, table)
            if changes or outdated:
                self._write(list(table.values()))
            if changes:
                self._record(changes, actor or default_actor())

    def update(self, taxon_id: int, actor: str | None = None, **changes: Any) -> Taxon:
        """Change fields of one row; returns the row as written."""
        with self.transaction(actor) as table:
            row = table.row(taxon_id)
            for name, value in changes.items():
                if not hasattr(row, name) or name == "taxonomy_id":
                    raise AttributeError(f"registry rows have no settable field {name!r}")
                setattr(row, name, value)
            return copy.deepcopy(row)

    def _write(self, rows: list[Taxon]) -> None:
        text = render_csv(COLUMNS, [[row.to_text()[c] for c in COLUMNS] for row in rows])
        atomic_write_text(self.path, text)

    def _record(self, changes: list[dict[str, Any]], actor: str) -> None:
        stamp = format_time(utc_now())
        for change in changes:
            entry = {"time": stamp, **change, "actor": actor}
            append_line(self.history_path, json.dumps(entry), self.history_max_bytes)

    def note(self, taxon_id: int, event: str, value: Any, actor: str | None = None) -> None:
        """Record an event that is not a column change (a cost estimate, an alert sent)."""
        with locked(self.path):
            self._record([{"taxon": taxon_id, "field": event, "old": None, "new": value}],
                         actor or default_actor())

    def history(self, taxon_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The newest history entries (of one taxon), oldest first."""
        if not self.history_path.exists():
            return []
        entries = []
        with open(self.history_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if taxon_id is None or entry.get("taxon") == taxon_id:
                    entries.append(entry)
        return entries[-limit:]


def _diff(before: dict[int, Taxon], after: Table) -> list[dict[str, Any]]:
    """History entries, one per added row, removed row and changed field."""
    changes: list[dict[str, Any]] = []
    for taxon_id, row in after.items():
        old = before.get(taxon_id)
        if old is None:
            changes.append({"taxon": taxon_id, "field": "row", "old": None, "new": row.to_text()})
            continue
        old_text, new_text = old.to_text(), row.to_text()
        for name in COLUMNS:
            if old_text[name] != new_text[name]:
                changes.append(
                    {"taxon": taxon_id, "field": name, "old": old_text[name], "new": new_text[name]}
                )
    for taxon_id, old in before.items():
        if taxon_id not in after:
            changes.append({"taxon": taxon_id, "field": "row", "old": old.to_text(), "new": None})
    return changes
