"""A taxon's ENA metadata in the state database: the ``ena_metadata`` table, what writes it and
what reads it.

An answer (already verified by the client and the check) is read in columnar batches (pyarrow,
quoting off: a ``"`` is data, never the start of a quoted field); a run listed twice is kept
once, from its latest row. Only new or changed rows are written, a batch per transaction, each
marked with the check's generation so that the filter decides only those; after a full answer
the stored runs it lacks are marked as not listed. ``ENA_metadata/<taxon>.csv`` is an export.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.ena.client import FIELDS, EnaError, Progress
from backend.settings import Settings
from backend.state.statefile import atomic_write_via
from backend.state.store import Database, database_of

#: Accessions per ``IN (...)`` look-up (SQLite allows 32766 parameters).
LOOKUP = 500
#: Bytes of the answer pyarrow parses per batch (about 2,500 runs). Larger blocks, or
#: pyarrow's reading threads, hold several times the memory for little speed.
BLOCK = 1 << 20
#: Runs written per transaction while merging: each commit waits for the disk, and each run
#: held costs about 1 kB of Python strings.
MERGE_ROWS = 20_000
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
-- (taxon, rowid): a taxon's rows in the order first seen, for the export, without a sort
CREATE INDEX IF NOT EXISTS ena_metadata_in_order ON ena_metadata (taxon);
"""
_UPSERT = (
    "INSERT INTO ena_metadata (taxon, accession, last_updated, line, listed, gen) "
    "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (taxon, accession) DO UPDATE SET "
    "last_updated = excluded.last_updated, line = excluded.line, listed = 1, gen = excluded.gen"
)


@dataclass
class Tally:
    """What merging answers found."""

    seen: int = 0
    new: int = 0
    changed: int = 0
    withdrawn: int = 0
    duplicates: int = 0
    warnings: list[str] = field(default_factory=list)


def metadata_path(data_dir: Path, taxon_id: int) -> Path:
    return Path(data_dir) / "ENA_metadata" / f"{taxon_id}.csv"


def metadata_db(settings: Settings) -> Database:
    """The state database, with the ``ena_metadata`` table this module owns."""
    return database_of(settings).ensure(SCHEMA)


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


def duplicate_rows(path: Path, taxon_id: int, result: Tally) -> set[int] | None:
    """Row numbers to skip: of runs listed more than once, all but the latest
    ``last_updated`` (the later row on a tie); None for an answer without rows. Reads two
    columns only."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.stat().st_size == 0:
        return None
    try:
        table = pacsv.open_csv(path, **_csv_options(_header(path), (
            "run_accession", "last_updated"))).read_all()
    except pa.ArrowInvalid as exc:
        raise _arrow_error(exc, taxon_id) from None
    pa.default_memory_pool().release_unused()  # the parse buffers, before the second pass
    try:
        return _duplicates(table, result)
    finally:
        del table
        pa.default_memory_pool().release_unused()  # the hash table: before the merge


def _duplicates(table: Any, result: Tally) -> set[int] | None:
    import pyarrow.compute as pc

    accessions = table["run_accession"]
    if not len(accessions):
        return None
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


def merge_answer(db: Database, taxon_id: int, path: Path, result: Tally, full: bool,
                 progress: bool | None = None, rows: int | None = None) -> None:
    """Write the answer's new and changed rows, a batch per transaction; after a full answer
    mark stored runs it lacks as not listed. Counts into ``result``."""
    skip = duplicate_rows(path, taxon_id, result)
    if skip is None:
        if full and stored_rows(db, taxon_id):
            # A whole taxon vanishing is far likelier an ENA fault than a mass withdrawal.
            result.warnings.append("ENA's full answer was empty; no run was marked withdrawn")
        return
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
    return sys.stdout.isatty() if progress is None else progress


# The export ----------------------------------------------------------------------------------


def export_metadata(settings: Settings, taxon_id: int) -> Path:
    """Write ``ENA_metadata/<taxon>.csv`` (the runs ENA lists now) atomically."""
    db = metadata_db(settings)
    target = metadata_path(settings.data_dir, taxon_id)

    def write(handle: Any) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FIELDS)
        cursor = db.connection().cursor()
        cursor.row_factory = None
        cursor.execute("SELECT line FROM ena_metadata WHERE taxon = ? AND listed = 1 "
                       "ORDER BY rowid", (taxon_id,))
        while rows := cursor.fetchmany(10_000):
            block = "\n".join(line for (line,) in rows)
            if "," not in block and '"' not in block and "\r" not in block:
                # Nothing to quote: tabs become commas (most pages, and much faster).
                handle.write(block.replace("\t", ",") + "\n")
                continue
            for (line,) in rows:
                if "," in line or '"' in line or "\r" in line:
                    writer.writerow(line.split("\t"))
                else:
                    handle.write(line.replace("\t", ",") + "\n")

    atomic_write_via(target, write)
    return target


def refresh_metadata_export(settings: Settings, taxon_id: int, *, force: bool = False,
                            clock: Callable[[], float] = time.time) -> bool:
    """Export when forced or when the last export is older than MICROFETCH_EXPORT_SECONDS."""
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
    # Keyset pages: each starts past the last, so this ends with the rows. The later pages
    # compare only the row value, which SQLite seeks to in the index; with ``gen > ?`` beside
    # it each page would walk the index from the start of ``after`` (quadratic in the rows).
    rows = db.tuples(
        "SELECT accession, line, listed, gen FROM ena_metadata WHERE taxon = ? AND gen > ? "
        "ORDER BY gen, accession LIMIT ?", (taxon_id, after, batch))
    while rows:
        yield rows  # type: ignore[misc]
        rows = db.tuples(
            "SELECT accession, line, listed, gen FROM ena_metadata WHERE taxon = ? "
            "AND (gen, accession) > (?, ?) ORDER BY gen, accession LIMIT ?",
            (taxon_id, rows[-1][3], rows[-1][0], batch))
