"""The `check` stage: a taxon's read_run metadata from ENA into the ``ena_metadata`` table.

After the first check only runs new or changed since ``last_checked`` are asked for (with a day
of overlap: ENA dates have day resolution); every ``MICROFETCH_ENA_FULL_CHECK_DAYS`` a full
check asks for all of them and marks the runs ENA no longer lists as not listed (the filter
then calls them ``withdrawn``). Runs excluded as ``no_files`` are asked about again by accession
every ``MICROFETCH_ENA_NO_FILES_RECHECK_DAYS``, as ENA adds FASTQ files without bumping
``last_updated``.

An answer is streamed to a temporary file and verified (header, UTF-8, complete last row, row
count within the allowed drift of ENA's count, the same number of fields in every row) before
anything stored is touched, so on any error stored metadata and runs stay as they were. It is
then read in columnar batches (pyarrow, quoting off: a ``"`` is data, never the start of a
quoted field) and only new or changed rows are written, each marked with the check's
generation so that the filter decides only those. ``ENA_metadata/<taxon>.csv`` is an export.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.ena import FIELDS, EnaClient, EnaError, Progress
from backend.logs import taxon_log
from backend.registry import Registry, Stage, Status
from backend.settings import Settings
from backend.statefile import atomic_write_via, locked, read_json, write_json
from backend.store import Database, database_of
from backend.timeutil import format_time, parse_time

ACTOR = "check"
FAILURES_BEFORE_ERROR = 3
#: Times a whole answer is asked for again when its rows and ENA's count differ too much.
DRIFT_ATTEMPTS = 3
#: Runs named per ``run_accession=`` query when asking about ``no_files`` runs again.
NO_FILES_BATCH = 100
#: Accessions per ``IN (...)`` look-up (SQLite allows 32766 parameters).
LOOKUP = 500
#: Bytes of the answer pyarrow parses per batch (about 2,500 runs). Larger blocks, or
#: pyarrow's reading threads, hold several times the memory for little speed.
BLOCK = 1 << 20
#: Runs written per transaction while merging (each commit waits for the disk).
MERGE_ROWS = 50_000
#: Duplicates named one by one in the log; the rest are counted.
NAMED_DUPLICATES = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS ena_metadata (
    taxon INTEGER NOT NULL,
    accession TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    line TEXT NOT NULL,                 -- FIELDS in their order, tab-joined, as ENA sent them
    listed INTEGER NOT NULL DEFAULT 1,  -- 0 once a full check no longer finds the run
    gen INTEGER NOT NULL,               -- the check that last changed the row
    PRIMARY KEY (taxon, accession)
);
CREATE INDEX IF NOT EXISTS ena_metadata_by_gen ON ena_metadata (taxon, gen, accession);
"""
_UPSERT = (
    "INSERT INTO ena_metadata (taxon, accession, last_updated, line, listed, gen) "
    "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (taxon, accession) DO UPDATE SET "
    "last_updated = excluded.last_updated, line = excluded.line, listed = 1, gen = excluded.gen"
)
_PREPARED: set[Path] = set()


@dataclass
class CheckResult:
    query: str
    seen: int = 0
    new: int = 0
    changed: int = 0
    total: int = 0
    withdrawn: int = 0
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)


def build_query(taxon_id: int, tax_match: str, since: date | None) -> str:
    term = f"tax_tree({taxon_id})" if tax_match == "tree" else f"tax_eq({taxon_id})"
    return f"{term} AND last_updated>={since.isoformat()}" if since else term


def accessions_query(accessions: Sequence[str]) -> str:
    """A query for these runs by accession (validated before: they are ERR/SRR/DRR digits)."""
    return " OR ".join(f"run_accession={accession}" for accession in accessions)


def since_date(last_checked: datetime | None) -> date | None:
    """The day to ask from: a day before the last check, as ENA dates have day resolution."""
    return (last_checked - timedelta(days=1)).date() if last_checked else None


def metadata_path(data_dir: Path, taxon_id: int) -> Path:
    return Path(data_dir) / "ENA_metadata" / f"{taxon_id}.csv"


def metadata_db(settings: Settings) -> Database:
    """The state database, with the ``ena_metadata`` table this module owns."""
    db = database_of(settings)
    if db.path not in _PREPARED:
        db.connection().executescript(SCHEMA)
        _PREPARED.add(db.path)
    return db


def due(db: Database, key: str, now: datetime, days: float) -> bool:
    """Whether the time stored under ``key`` is missing or at least ``days`` old."""
    last = parse_time(db.meta(key) or "")
    return last is None or now - last >= timedelta(days=days)


def check_taxon(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
                client: EnaClient | None = None, progress: bool | None = None) -> CheckResult:
    """Ask ENA for the taxon's runs and merge them; on failure mark the taxon, raise EnaError."""
    row = registry.get(taxon_id)
    log = taxon_log(taxon_id)
    db = metadata_db(settings)
    full = not stored_rows(db, taxon_id) or due(db, f"ena_full:{taxon_id}", now,
                                                settings.ena_full_check_days)
    since = None if full else since_date(row.last_checked)
    result = CheckResult(build_query(taxon_id, settings.ena_tax_match, since))
    registry.update(taxon_id, ACTOR, last_run_status=Status.IN_PROGRESS, stage=Stage.CHECK)
    client = client or EnaClient(settings)
    download = metadata_path(settings.data_dir, taxon_id).with_name(f".{taxon_id}.download.tsv")
    download.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = fetch_answer(client, settings, result, download, taxon_id, progress)
        merge_answer(db, taxon_id, download, result, full, progress, rows)
        if due(db, f"ena_no_files:{taxon_id}", now, settings.ena_no_files_recheck_days):
            recheck_no_files(client, settings, db, taxon_id, download, result)
            db.set_meta(f"ena_no_files:{taxon_id}", format_time(now))
    except EnaError as exc:
        record_failure(settings, registry, taxon_id, str(exc))
        log.warning("check failed: {}", exc)
        raise
    finally:
        download.unlink(missing_ok=True)
    if full:
        db.set_meta(f"ena_full:{taxon_id}", format_time(now))
    result.total = stored_rows(db, taxon_id)
    if result.new or result.changed or result.withdrawn:
        refresh_metadata_export(settings, taxon_id)
    clear_failures(settings, taxon_id)
    registry.update(taxon_id, ACTOR, last_checked=now, stage=Stage.FILTER,
                    generated_warning=bool(result.warnings))
    for warning in result.warnings:
        log.warning("{}", warning)
    log.info("checked ENA with {!r}: {} runs seen, {} new, {} changed, {} withdrawn, {} stored",
             result.query, result.seen, result.new, result.changed, result.withdrawn,
             result.total)
    return result


def fetch_answer(client: EnaClient, settings: Settings, result: CheckResult, dest: Path,
                 taxon_id: int, progress: bool | None, query: str | None = None) -> int:
    """Count, then download, ``query``; asked again while rows and count differ by more than
    the allowed drift (ENA changes while a large taxon is read). Returns the rows."""
    query = query or result.query
    rows = expected = 0
    for _ in range(DRIFT_ATTEMPTS):
        expected = client.count(query, taxon_id)
        rows = client.search_to_file(query, FIELDS, dest, taxon_id, progress, expected)
        if rows == expected:
            return rows
        if abs(rows - expected) <= settings.ena_count_drift * expected:
            result.warnings.append(f"ENA sent {rows} rows for {query!r} but counts {expected}: "
                                   "within MICROFETCH_ENA_COUNT_DRIFT, taken")
            return rows
    raise EnaError(f"ENA sent {rows} rows for {query!r} but counts {expected}, "
                   f"{DRIFT_ATTEMPTS} times, more than MICROFETCH_ENA_COUNT_DRIFT allows: the "
                   "answer was cut short; it is tried again at the taxon's next turn",
                   taxon=taxon_id)


def stored_rows(db: Database, taxon_id: int) -> int:
    return db.query("SELECT count(*) FROM ena_metadata WHERE taxon = ? AND listed = 1",
                    (taxon_id,))[0][0]


# Reading an answer -----------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        return handle.readline().decode("utf-8").rstrip("\r\n").split("\t")


def _csv_options(header: list[str], columns: Sequence[str]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return {
        "read_options": pacsv.ReadOptions(block_size=BLOCK, use_threads=False),
        # Quoting off: ENA's TSV does not quote, and a field starting with `"` must not
        # swallow the rows after it.
        "parse_options": pacsv.ParseOptions(delimiter="\t", quote_char=False,
                                            double_quote=False, escape_char=False,
                                            newlines_in_values=False),
        "convert_options": pacsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, include_columns=list(columns),
            strings_can_be_null=False, quoted_strings_can_be_null=False),
    }


def _arrow_error(exc: Exception, taxon_id: int) -> EnaError:
    return EnaError(f"ENA's answer has a malformed row ({str(exc)[:300]}); it is tried again "
                    "at the taxon's next turn", taxon=taxon_id)


def duplicate_rows(path: Path, taxon_id: int, result: CheckResult) -> set[int]:
    """Row numbers to skip: of runs listed more than once, all but the latest
    ``last_updated`` (the later row on a tie). Reads two columns only."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pa.Table.from_batches(pacsv.open_csv(
            path, **_csv_options(_header(path), ("run_accession", "last_updated"))))
    except pa.ArrowInvalid as exc:
        raise _arrow_error(exc, taxon_id) from None
    accessions = table["run_accession"]
    if pc.count_distinct(accessions).as_py() == len(accessions):
        return set()
    counts = pc.value_counts(accessions)
    twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    where = pc.indices_nonzero(pc.is_in(accessions, value_set=twice)).to_pylist()
    latest: dict[str, tuple[str, int]] = {}
    for index in where:
        key = (table["last_updated"][index].as_py(), index)
        accession = accessions[index].as_py()
        latest[accession] = max(latest.get(accession, key), key)
    keep = {index for _, index in latest.values()}
    skip = set(where) - keep
    result.duplicates = len(skip)
    named = ", ".join(sorted(latest)[:NAMED_DUPLICATES])
    result.warnings.append(f"ENA listed {len(latest)} runs more than once ({named}"
                           f"{', …' if len(latest) > NAMED_DUPLICATES else ''}); kept the row "
                           "with the latest last_updated of each")
    return skip


def answer_batches(path: Path, taxon_id: int, skip: set[int],
                   rows: int = MERGE_ROWS) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(accessions, last_updated, tab-joined FIELDS) per ``rows`` or so of the answer."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    accessions: list[str] = []
    updated: list[str] = []
    lines: list[str] = []
    try:
        offset = 0
        for batch in pacsv.open_csv(path, **_csv_options(_header(path), FIELDS)):
            if skip:
                keep = [offset + i not in skip for i in range(batch.num_rows)]
                offset += batch.num_rows
                batch = batch.filter(pa.array(keep))
            accessions += batch.column(0).to_pylist()
            updated += batch.column(FIELDS.index("last_updated")).to_pylist()
            lines += pc.binary_join_element_wise(*batch.columns, "\t").to_pylist()
            if len(accessions) >= rows:
                yield accessions, updated, lines
                accessions, updated, lines = [], [], []
    except pa.ArrowInvalid as exc:
        raise _arrow_error(exc, taxon_id) from None
    if accessions:
        yield accessions, updated, lines


# Merging -------------------------------------------------------------------------------------


def merge_answer(db: Database, taxon_id: int, path: Path, result: CheckResult, full: bool,
                 progress: bool | None = None, rows: int | None = None) -> None:
    """Write the answer's new and changed rows, a batch per transaction; after a full answer
    mark stored runs it lacks as not listed. Counts into ``result``."""
    if path.stat().st_size == 0:
        if full and stored_rows(db, taxon_id):
            # A whole taxon vanishing is far likelier an ENA fault than a mass withdrawal.
            result.warnings.append("ENA's full answer was empty; no run was marked withdrawn")
        return
    skip = duplicate_rows(path, taxon_id, result)
    gen = db.query("SELECT coalesce(max(gen), 0) + 1 FROM ena_metadata WHERE taxon = ?",
                   (taxon_id,))[0][0]
    first = not db.query("SELECT 1 FROM ena_metadata WHERE taxon = ? LIMIT 1", (taxon_id,))
    diff = full and not first
    con = db.connection()
    if diff:
        con.execute("CREATE TEMP TABLE IF NOT EXISTS ena_listed (accession TEXT PRIMARY KEY)")
        con.execute("DELETE FROM temp.ena_listed")
    bar = Progress(_show(progress), rows, "merging")
    try:
        for accessions, updated, lines in answer_batches(path, taxon_id, skip):
            result.seen += len(accessions)
            stored = {} if first else _stored(db, taxon_id, accessions)
            fresh = [(taxon_id, a, u, line, gen)
                     for a, u, line in zip(accessions, updated, lines, strict=True)
                     if stored.get(a) != (line, 1)]
            result.new += sum(1 for row in fresh if row[1] not in stored)
            result.changed += sum(1 for row in fresh if row[1] in stored)
            with db.write() as write:
                write.executemany(_UPSERT, fresh)
                if diff:
                    write.executemany("INSERT OR IGNORE INTO temp.ena_listed VALUES (?)",
                                      ((a,) for a in accessions))
            bar.update(len(accessions))
        if diff:
            with db.write() as write:
                result.withdrawn = write.execute(
                    "UPDATE ena_metadata SET listed = 0, gen = ? WHERE taxon = ? AND listed = 1 "
                    "AND accession NOT IN (SELECT accession FROM temp.ena_listed)",
                    (gen, taxon_id)).rowcount
                write.execute("DELETE FROM temp.ena_listed")
    finally:
        bar.close()


def _stored(db: Database, taxon_id: int, accessions: list[str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for start in range(0, len(accessions), LOOKUP):
        part = accessions[start:start + LOOKUP]
        for accession, line, listed in db.query(
                "SELECT accession, line, listed FROM ena_metadata WHERE taxon = ? AND accession "
                f"IN ({', '.join('?' * len(part))})", (taxon_id, *part)):
            found[accession] = (line, listed)
    return found


def _show(progress: bool | None) -> bool:
    import sys

    return sys.stdout.isatty() if progress is None else progress


def recheck_no_files(client: EnaClient, settings: Settings, db: Database, taxon_id: int,
                     download: Path, result: CheckResult) -> int:
    """Ask ENA again about runs excluded as ``no_files``, by accession; returns runs asked."""
    rows = db.query("SELECT accession FROM runs WHERE taxon = ? AND category = 'excluded' AND "
                    "exclusion_reason LIKE 'no_files:%' ORDER BY seq", (taxon_id,))
    accessions = [row[0] for row in rows]
    for start in range(0, len(accessions), NO_FILES_BATCH):
        query = accessions_query(accessions[start:start + NO_FILES_BATCH])
        fetch_answer(client, settings, result, download, taxon_id, False, query)
        merge_answer(db, taxon_id, download, result, full=False, progress=False)
    return len(accessions)


# The export ----------------------------------------------------------------------------------


def export_metadata(settings: Settings, taxon_id: int) -> Path:
    """Write ``ENA_metadata/<taxon>.csv`` (the runs ENA lists now) atomically."""
    db = metadata_db(settings)
    target = metadata_path(settings.data_dir, taxon_id)

    def write(handle: Any) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FIELDS)
        cursor = db.connection().execute(
            "SELECT line FROM ena_metadata WHERE taxon = ? AND listed = 1 ORDER BY rowid",
            (taxon_id,))
        while rows := cursor.fetchmany(10_000):
            for (line,) in rows:
                if "," in line or '"' in line or "\r" in line:
                    writer.writerow(line.split("\t"))
                else:  # nothing to quote: tabs become commas (most rows, and much faster)
                    handle.write(line.replace("\t", ",") + "\n")

    atomic_write_via(target, write)
    return target


def refresh_metadata_export(settings: Settings, taxon_id: int, *, force: bool = False,
                            clock: Callable[[], float] = time.time) -> bool:
    """Export when forced or when the last export is older than MICROFETCH_EXPORT_SECONDS:
    a 1% change of a large taxon does not rewrite the whole file on every check."""
    db = metadata_db(settings)
    key = f"ena_exported:{taxon_id}"
    if not force and clock() - float(db.meta(key) or 0) < settings.export_seconds:
        return False
    export_metadata(settings, taxon_id)
    db.set_meta(key, str(clock()))
    return True


def metadata_lines(db: Database, taxon_id: int, after: int,
                   batch: int) -> Iterator[list[tuple[str, str, int, int]]]:
    """Rows changed by checks after generation ``after``: (accession, line, listed, gen)
    lists of at most ``batch``, in generation then accession order."""
    last: tuple[int, str] = (after, "")
    while True:  # keyset pages: each starts past the last, so this ends with the rows
        rows = db.query(
            "SELECT accession, line, listed, gen FROM ena_metadata WHERE taxon = ? AND gen > ? "
            "AND (gen, accession) > (?, ?) ORDER BY gen, accession LIMIT ?",
            (taxon_id, after, *last, batch))
        if not rows:
            return
        yield [tuple(row) for row in rows]  # type: ignore[misc]
        last = (rows[-1][3], rows[-1][0])


# Failures ------------------------------------------------------------------------------------


def _failures_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "ENA_metadata" / "failures.json"


def record_failure(settings: Settings, registry: Registry, taxon_id: int, reason: str) -> int:
    """Count a failed check; the third in a row needs a person. Returns the count."""
    path = _failures_path(settings)
    with locked(path):
        counts = read_json(path) if path.exists() else {}
        count = counts.get(str(taxon_id), 0) + 1
        counts[str(taxon_id)] = count
        write_json(path, counts)
    changes: dict[str, object] = {"last_run_status": Status.WARNING, "generated_warning": True}
    if count >= FAILURES_BEFORE_ERROR:
        changes["last_run_status"] = Status.ERROR
        changes["needs_attention"] = (
            f"ENA failed {count} times in a row: {reason}. Check ENA's status, then "
            f"`microfetch attention clear {taxon_id}`"
        )
    registry.update(taxon_id, ACTOR, **changes)
    return count


def clear_failures(settings: Settings, taxon_id: int) -> None:
    path = _failures_path(settings)
    if not path.exists():
        return
    with locked(path):
        counts = read_json(path)
        if counts.pop(str(taxon_id), None) is not None:
            write_json(path, counts)
