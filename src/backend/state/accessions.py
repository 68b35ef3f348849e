"""A taxon's runs: one typed row per run, kept in the state database.

``ENA_accession_numbers/<taxon_id>.csv`` keeps the seed's columns as an export for people and
scripts (:meth:`AccessionList.export`); nothing reads it on a hot path. Runs change inside
:meth:`AccessionList.edit`, one database transaction that writes back only what changed.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from backend.errors import RegistryError
from backend.state.statefile import atomic_write_via
from backend.state.store import Database, database_of
from backend.timeutil import format_time, parse_time

#: A run accession, ASCII only (``\d`` would take any script's digits) and ``\Z``, not ``$``,
#: which would let a trailing newline through: accessions become paths, URLs and arguments.
ACCESSION = re.compile(r"[EDS]RR[0-9]{6,12}\Z", re.ASCII)


class RunStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    FETCHED = "fetched"
    FAILED = "failed"


class Exclusion(StrEnum):
    """The fixed code that starts every ``exclusion_reason``."""

    PLATFORM = "platform"
    STRATEGY = "strategy"
    SOURCE = "source"
    LAYOUT = "layout"
    NO_FILES = "no_files"
    NO_MD5 = "no_md5"
    MIN_BASES = "min_bases"
    BAD_ACCESSION = "bad_accession"
    BAD_PATH = "bad_path"
    HOST_NOT_ALLOWED = "host_not_allowed"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"
    FAILED_ATTEMPTS = "failed_attempts"
    WITHDRAWN = "withdrawn"

    def reason(self, detail: str) -> str:
        return f"{self.value}: {detail}"


COLUMNS = (
    "run_accession_number",
    "excluded",
    "droplet_ip",
    "exclusion_reason",
    "status",
    "worker",
    "fastq_files",
    "fastq_bytes",
    "fastq_md5",
    "attempts",
    "last_error",
    "fetched_at",
    "assembly_status",
    "assembly_path",
    "assembly_md5",
    "contigs",
    "total_length",
    "n50",
    "assembly_error",
)
#: The assembly columns, in the order above (empty for a run not assembled).
ASSEMBLY_COLUMNS = COLUMNS[COLUMNS.index("assembly_status"):]


@dataclass
class Run:
    """One row of an accession list."""

    run_accession_number: str
    excluded: bool = False
    droplet_ip: str = ""
    exclusion_reason: str = ""
    status: RunStatus = RunStatus.PENDING
    worker: str = ""
    fastq_files: tuple[str, ...] = ()
    fastq_bytes: tuple[int, ...] = ()
    fastq_md5: tuple[str, ...] = ()
    attempts: int = 0
    last_error: str = ""
    fetched_at: datetime | None = None
    assembly_status: str = ""           # "", "assembled" or "failed"
    assembly_path: str = ""             # under genomes/<taxon>/, e.g. ERR1/ERR1.contigs.fa.gz
    assembly_md5: str = ""
    contigs: int | None = None
    total_length: int | None = None
    n50: int | None = None
    assembly_error: str = ""
    given_up_at: datetime | None = None  # when it was excluded for failed attempts
    rounds: int = 0                     # times it was given another round after that

    @property
    def accession(self) -> str:
        return self.run_accession_number

    @property
    def exclusion_code(self) -> str:
        return self.exclusion_reason.split(":", 1)[0].strip() if self.excluded else ""

    @property
    def total_bytes(self) -> int:
        return sum(self.fastq_bytes)

    @property
    def wanted(self) -> bool:
        return not self.excluded

    def exclude(self, code: Exclusion, detail: str) -> None:
        self.excluded = True
        self.exclusion_reason = code.reason(detail)

    def include(self) -> None:
        self.excluded = False
        self.exclusion_reason = ""

    @property
    def category(self) -> str:
        """What pages count it as: a status, or why it is left out."""
        if not self.excluded:
            return self.status.value
        code = self.exclusion_code
        if code == Exclusion.FAILED_ATTEMPTS.value:
            return "failed"
        return "withdrawn" if code == Exclusion.WITHDRAWN.value else "excluded"

    def to_sql(self, taxon_id: int) -> tuple[Any, ...]:
        """The values of :data:`SQL_COLUMNS`."""
        return (
            taxon_id, self.run_accession_number, int(self.excluded), self.droplet_ip,
            self.exclusion_reason, self.status.value, self.worker, ";".join(self.fastq_files),
            ";".join(str(size) for size in self.fastq_bytes), ";".join(self.fastq_md5),
            self.total_bytes, self.attempts, self.last_error, format_time(self.fetched_at),
            self.category, self.assembly_status, self.assembly_path, self.assembly_md5,
            self.contigs, self.total_length, self.n50, self.assembly_error,
            format_time(self.given_up_at), self.rounds,
        )

    @classmethod
    def from_sql(cls, row: sqlite3.Row | tuple[Any, ...]) -> Run:
        """A run from a ``SELECT`` of :data:`SQL_COLUMNS`."""
        values = dict(zip(SQL_COLUMNS, tuple(row), strict=True))
        return cls(
            run_accession_number=values["accession"], excluded=bool(values["is_excluded"]),
            droplet_ip=values["droplet_ip"], exclusion_reason=values["exclusion_reason"],
            status=RunStatus(values["status"]), worker=values["worker"],
            fastq_files=_split(values["fastq_files"]),
            fastq_bytes=tuple(int(x) for x in _split(values["fastq_bytes"])),
            fastq_md5=_split(values["fastq_md5"]), attempts=values["attempts"],
            last_error=values["last_error"], fetched_at=parse_time(values["fetched_at"]),
            **{name: values[name] for name in ASSEMBLY_COLUMNS},
            given_up_at=parse_time(values["given_up_at"]), rounds=values["rounds"],
        )

    def to_text(self) -> list[str]:
        return [
            self.run_accession_number,
            str(self.excluded),
            self.droplet_ip,
            self.exclusion_reason,
            self.status.value,
            self.worker,
            ";".join(self.fastq_files),
            ";".join(str(size) for size in self.fastq_bytes),
            ";".join(self.fastq_md5),
            str(self.attempts),
            self.last_error,
            format_time(self.fetched_at),
            *("" if getattr(self, name) is None else str(getattr(self, name))
              for name in ASSEMBLY_COLUMNS),
        ]

    @classmethod
    def from_text(cls, values: dict[str, str]) -> Run:
        def split(name: str) -> tuple[str, ...]:
            return tuple(part for part in values.get(name, "").split(";") if part)

        excluded = values.get("excluded", "").strip().lower()
        if excluded not in {"", "true", "false"}:
            raise ValueError(f"column excluded has {values['excluded']!r}: expected True or False")
        try:
            status = RunStatus(values.get("status", "").strip() or "pending")
        except ValueError:
            raise ValueError(f"column status has {values.get('status')!r}") from None
        try:
            sizes = tuple(int(size) for size in split("fastq_bytes"))
            attempts = int(values.get("attempts", "").strip() or 0)
            fetched_at = parse_time(values.get("fetched_at", ""))
        except ValueError as exc:
            raise ValueError(f"bad number or time: {exc}") from None
        return cls(
            run_accession_number=values.get("run_accession_number", "").strip(),
            excluded=excluded == "true",
            droplet_ip=values.get("droplet_ip", "").strip(),
            exclusion_reason=values.get("exclusion_reason", ""),
            status=status,
            worker=values.get("worker", "").strip(),
            fastq_files=split("fastq_files"),
            fastq_bytes=sizes,
            fastq_md5=split("fastq_md5"),
            attempts=attempts,
            last_error=values.get("last_error", ""),
            fetched_at=fetched_at,
            **_assembly_from_text(values),
        )



def _assembly_from_text(values: dict[str, str]) -> dict[str, Any]:
    """The assembly columns of a CSV row (absent in lists written before assembly existed)."""
    numbers = ("contigs", "total_length", "n50")
    found = {name: (values.get(name) or "").strip() for name in ASSEMBLY_COLUMNS}
    try:
        return {name: (int(text) if text else None) if name in numbers else text
                for name, text in found.items()}
    except ValueError as exc:
        raise ValueError(f"bad assembly number: {exc}") from None


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(";") if part)


SQL_COLUMNS = (
    "taxon", "accession", "is_excluded", "droplet_ip", "exclusion_reason", "status", "worker",
    "fastq_files", "fastq_bytes", "fastq_md5", "total_bytes", "attempts", "last_error",
    "fetched_at", "category", *ASSEMBLY_COLUMNS, "given_up_at", "rounds",
)
_SELECT = f"SELECT {', '.join(SQL_COLUMNS)} FROM runs"
_UPSERT = (
    f"INSERT INTO runs ({', '.join(SQL_COLUMNS)}) VALUES ({', '.join('?' * len(SQL_COLUMNS))}) "
    "ON CONFLICT (taxon, accession) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SQL_COLUMNS[2:])
)
#: The columns :meth:`AccessionList.insert_new` sets (total_bytes and category last).
NEW_COLUMNS = ("taxon", "accession", "is_excluded", "exclusion_reason", "fastq_files",
               "fastq_bytes", "fastq_md5", "total_bytes", "category")
_INSERT_NEW = (f"INSERT INTO runs ({', '.join(NEW_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(NEW_COLUMNS))})")
#: The export's columns (COLUMNS) as stored (is_excluded an integer), then seq.
_EXPORT = (
    "SELECT accession, is_excluded, droplet_ip, exclusion_reason, status, worker, fastq_files, "
    "fastq_bytes, fastq_md5, attempts, last_error, fetched_at, "
    f"{', '.join(ASSEMBLY_COLUMNS)}, seq FROM runs WHERE taxon = ? AND seq > ? AND seq <= ? "
    "ORDER BY seq"
)
#: A row stored as :meth:`Run.to_sql` writes it (lists without empty items, sizes and times
#: in canonical form, numbers as integers): its export row is its stored text as it is.
_PLAIN = " AND ".join([
    "typeof(is_excluded) = 'integer'", "typeof(attempts) = 'integer'",
    *(f"typeof({c}) IN ('integer', 'null')" for c in ("contigs", "total_length", "n50")),
    *(f"{c} NOT GLOB ';*' AND {c} NOT GLOB '*;' AND {c} NOT GLOB '*;;*'"
      for c in ("fastq_files", "fastq_md5", "fastq_bytes")),
    "fastq_bytes NOT GLOB '*[^0-9;]*' AND fastq_bytes NOT GLOB '0[0-9]*' "
    "AND fastq_bytes NOT GLOB '*;0[0-9]*'",
    "(fetched_at = '' OR fetched_at GLOB "
    "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z')",
    # printf ends a text at a NUL: such a row goes the long way
    *(f"instr({c}, char(0)) = 0" for c in ("accession", "droplet_ip", "exclusion_reason",
                                           "status", "worker", "fastq_files", "fastq_md5",
                                           "last_error", "assembly_status", "assembly_path",
                                           "assembly_md5", "assembly_error")),
])
#: Unit separator: joins a plain row's fields in SQLite; a page whose text holds no `,`,
#: `"`, CR, NUL or other separator becomes CSV by one replace (the csv module would not quote).
SEP = "\x1f"
_EXPORT_LINES = (
    f"SELECT seq, CASE WHEN {_PLAIN} THEN printf('{SEP.join(['%s'] * len(COLUMNS))}', "
    "accession, CASE WHEN is_excluded THEN 'True' ELSE 'False' END, droplet_ip, "
    "exclusion_reason, status, worker, fastq_files, fastq_bytes, fastq_md5, attempts, "
    f"last_error, fetched_at, {', '.join(ASSEMBLY_COLUMNS)}) END "  # NULL prints as ''
    "FROM runs WHERE taxon = ? AND seq > ? ORDER BY seq LIMIT ?"
)
EXPORT_BATCH = 20_000
_CANONICAL_LIST = re.compile(r"(?:[^;]+(?:;[^;]+)*)?\Z")
_CANONICAL_SIZES = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:;(?:0|[1-9][0-9]*))*)?\Z", re.ASCII)
_CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z",
                             re.ASCII)
#: SQLite's limit on host parameters is 32766; stay well below it.
BATCH = 500
CATEGORIES = ("pending", "assigned", "fetched", "failed", "excluded", "withdrawn")


def export_path(data_dir: Path, taxon_id: int) -> Path:
    return Path(data_dir) / "ENA_accession_numbers" / f"{taxon_id}.csv"


class AccessionList:
    """The runs of one taxon."""

    def __init__(self, db: Database, taxon_id: int) -> None:
        self.db = db
        self.taxon_id = taxon_id
        self.path = export_path(db.data_dir, taxon_id)

    @classmethod
    def of(cls, settings: Any, taxon_id: int) -> AccessionList:
        return cls(database_of(settings), taxon_id)

    # Reading -------------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.db.query("SELECT 1 FROM runs WHERE taxon = ? LIMIT 1",
                                  (self.taxon_id,)))

    def load(self) -> dict[str, Run]:
        """Every run by accession, in the order they were first seen (small taxa, tests)."""
        return {run.accession: run for run in self.runs()}

    def runs(self, batch: int = 5000, category: str | None = None) -> Iterator[Run]:
        """Runs (of one category) one at a time, in order, without holding the whole list."""
        last = 0
        where = "taxon = ? AND seq > ?" + (" AND category = ?" if category else "")
        extra = (category,) if category else ()
        while True:
            rows = self.db.query(f"SELECT seq, {', '.join(SQL_COLUMNS)} FROM runs WHERE "
                                 f"{where} ORDER BY seq LIMIT ?",
                                 (self.taxon_id, last, *extra, batch))
            for row in rows:
                yield Run.from_sql(tuple(row)[1:])
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def get(self, accessions: Iterable[str]) -> dict[str, Run]:
        """The named runs that exist, by accession."""
        return _select(self.db.connection(), self.taxon_id, list(accessions))

    def pending(self, limit: int) -> list[Run]:
        """Wanted runs waiting for a worker, oldest first (uses ``runs_by_category``)."""
        rows = self.db.query(f"{_SELECT} WHERE taxon = ? AND category = 'pending' "
                             "ORDER BY seq LIMIT ?", (self.taxon_id, limit))
        return [Run.from_sql(row) for row in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """Runs and bytes per category (kept current by triggers, no scan)."""
        return counts_by_taxon(self.db, self.taxon_id).get(self.taxon_id, empty_counts())

    def last_error(self) -> str:
        """The newest run error (the partial index ``runs_with_errors`` finds it at once)."""
        rows = self.db.query("SELECT last_error FROM runs WHERE taxon = ? AND last_error != '' "
                             "ORDER BY seq DESC LIMIT 1", (self.taxon_id,))
        return rows[0][0] if rows else ""

    # Writing -------------------------------------------------------------------------------

    @contextmanager
    def edit(self, accessions: Iterable[str] | None = None) -> Iterator[dict[str, Run]]:
        """One transaction: read the named runs (all when None), let the caller change or add
        runs in the dict, then write back what changed."""
        with self.db.write() as con:
            runs = (_select(con, self.taxon_id, list(accessions)) if accessions is not None
                    else {run.accession: run for run in self.runs()})
            before = {key: run.to_sql(self.taxon_id) for key, run in runs.items()}
            yield runs
            changed = [row for key, run in runs.items()
                       if before.get(key) != (row := run.to_sql(self.taxon_id))]
            con.executemany(_UPSERT, changed)

    def save(self, runs: Iterable[Run]) -> None:
        """Insert or replace runs (the caller decided their whole state)."""
        with self.db.write() as con:
            con.executemany(_UPSERT, (run.to_sql(self.taxon_id) for run in runs))

    def insert_new(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert runs the taxon does not have yet, given as :data:`NEW_COLUMNS` tuples (the
        other columns keep their defaults), in one transaction; counted into ``run_counts``
        once per category instead of by the per-row trigger, which costs more than the insert
        itself. Raises ``sqlite3.IntegrityError`` (nothing written) when one exists already."""
        counts: dict[str, list[int]] = {}
        for row in rows:
            tally = counts.setdefault(row[-1], [0, 0])
            tally[0] += 1
            tally[1] += row[-2]
        with self.db.write() as con:
            # Within this transaction only: a crash or an error restores the trigger with the
            # rest, and no other writer can insert while it holds the write lock.
            trigger = con.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                                  "name = 'runs_counted_in'").fetchone()
            if trigger is not None:
                con.execute("DROP TRIGGER runs_counted_in")
            con.executemany(_INSERT_NEW, rows)
            if trigger is not None:
                con.executemany(
                    "INSERT INTO run_counts (taxon, category, runs, bytes) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (taxon, category) DO UPDATE SET runs = runs + excluded.runs, "
                    "bytes = bytes + excluded.bytes",
                    [(self.taxon_id, category, runs, size)
                     for category, (runs, size) in counts.items()])
                con.execute(trigger[0])

    def export(self) -> Path:
        """Write ``ENA_accession_numbers/<taxon>.csv`` atomically, from the stored text
        (what :meth:`Run.to_text` gives, without a :class:`Run` per row)."""

        def write(handle: Any) -> None:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            last = 0
            while rows := self.db.tuples(_EXPORT_LINES, (self.taxon_id, last, EXPORT_BATCH)):
                lines = [line for _, line in rows]
                page = None if None in lines else "\n".join(lines)
                if (page is not None and page.count(SEP) == (len(COLUMNS) - 1) * len(rows)
                        and page.count("\n") == len(rows) - 1
                        and not any(c in page for c in ',"\r\x00')):
                    handle.write(page.replace(SEP, ",") + "\n")
                else:  # the page the long way, a run at a time
                    writer.writerows(map(_export_row, self.db.tuples(
                        _EXPORT, (self.taxon_id, last, rows[-1][0]))))
                last = rows[-1][0]

        atomic_write_via(self.path, write)
        return self.path


def _export_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An export row from :data:`_EXPORT` (seq last, dropped). Lists are stored ``;``-joined
    and times in their text form, as :meth:`Run.to_text` writes them; a row stored otherwise
    (empty list items, a number or time not in canonical form) goes through :class:`Run`."""
    files, sizes, md5s, fetched = row[6], row[7], row[8], row[11]
    if (_CANONICAL_LIST.match(files) and _CANONICAL_SIZES.match(sizes)
            and _CANONICAL_LIST.match(md5s) and (not fetched or _CANONICAL_TIME.match(fetched))):
        return (row[0], str(bool(row[1])), *row[2:-1])
    values = dict(zip(COLUMNS, row[:-1], strict=True))
    values["excluded"] = bool(values["excluded"])
    run = Run(values.pop("run_accession_number"), **{
        **values, "status": RunStatus(values["status"]), "fastq_files": _split(files),
        "fastq_bytes": tuple(int(x) for x in _split(sizes)), "fastq_md5": _split(md5s),
        "fetched_at": parse_time(fetched)})
    return tuple(run.to_text())


def _select(con: sqlite3.Connection, taxon_id: int, accessions: list[str]) -> dict[str, Run]:
    found: dict[str, Run] = {}
    for start in range(0, len(accessions), BATCH):
        part = accessions[start:start + BATCH]
        marks = ", ".join("?" * len(part))
        # No ORDER BY: it would tempt the planner into walking the taxon's runs in order
        # instead of looking these up by accession; the caller's order is restored below.
        for row in con.execute(f"{_SELECT} WHERE taxon = ? AND accession IN ({marks})",
                               (taxon_id, *part)):
            run = Run.from_sql(row)
            found[run.accession] = run
    return {a: found[a] for a in accessions if a in found}


def empty_counts() -> dict[str, dict[str, int]]:
    return {category: {"runs": 0, "bytes": 0} for category in CATEGORIES}


def counts_by_taxon(db: Database, taxon_id: int | None = None) -> dict[int, dict[str, dict]]:
    """Runs and bytes per category for one taxon or all, from ``run_counts``."""
    where, params = ("WHERE taxon = ?", (taxon_id,)) if taxon_id is not None else ("", ())
    result: dict[int, dict[str, dict[str, int]]] = {}
    for taxon, category, runs, size in db.query(
            f"SELECT taxon, category, runs, bytes FROM run_counts {where}", params):
        result.setdefault(taxon, empty_counts())[category] = {"runs": runs, "bytes": size}
    return result


def read_csv_runs(path: Path) -> Iterator[Run]:
    """Runs from an accession-list CSV (an export, or a list from before the database)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for values in reader:
            if None in values or None in values.values():
                raise RegistryError(path, reader.line_num, "wrong number of fields")
            try:
                yield Run.from_text(values)
            except ValueError as exc:
                raise RegistryError(path, reader.line_num, str(exc)) from None
