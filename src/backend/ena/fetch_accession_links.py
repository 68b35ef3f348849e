"""The `check` stage: a taxon's read_run metadata from ENA into the ``ena_metadata`` table.

After the first check only runs new or changed since ``last_checked`` are asked for (with a day
of overlap: ENA dates have day resolution); every ``MICROFETCH_ENA_FULL_CHECK_DAYS`` a full
check asks for all of them, and the runs ENA no longer lists are marked (the filter then calls
them ``withdrawn``). Runs excluded as ``no_files`` are asked about again by accession every
``MICROFETCH_ENA_NO_FILES_RECHECK_DAYS``, as ENA adds FASTQ files without bumping
``last_updated``.

An answer is counted, streamed to a temporary file and verified (header, UTF-8, complete last
row, deadline, row count within the allowed drift of ENA's count, the same number of fields in
every row) before anything stored is touched, so on any error stored metadata and runs stay as
they were. :mod:`backend.ena.metadata` merges it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from backend.ena.client import FIELDS, EnaClient, EnaError
from backend.ena.metadata import (
    Tally,
    merge_answer,
    metadata_db,
    metadata_path,
    refresh_metadata_export,
    stored_rows,
)
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.registry import Registry
from backend.state.store import Database
from backend.timeutil import format_time, parse_time

#: Times a whole answer is asked for again when its rows and ENA's count differ too much.
DRIFT_ATTEMPTS = 3
#: Runs named per ``run_accession=`` query when asking about ``no_files`` runs again.
NO_FILES_BATCH = 100
#: Most ``no_files`` runs asked about per check: 50 queries of 100, a few seconds.
NO_FILES_PER_CHECK = 5000


@dataclass
class CheckResult(Tally):
    """What a check asked and found."""

    query: str = ""
    total: int = 0


def build_query(taxon_id: int, tax_match: str, since: date | None) -> str:
    term = f"tax_tree({taxon_id})" if tax_match == "tree" else f"tax_eq({taxon_id})"
    return f"{term} AND last_updated>={since.isoformat()}" if since else term


def accessions_query(accessions: Sequence[str]) -> str:
    """A query for these runs by accession (validated before: they are ERR/SRR/DRR digits)."""
    return " OR ".join(f"run_accession={accession}" for accession in accessions)


def since_date(last_checked: datetime | None) -> date | None:
    """The day to ask from: a day before the last check, as ENA dates have day resolution."""
    return (last_checked - timedelta(days=1)).date() if last_checked else None


def due(db: Database, key: str, now: datetime, days: float) -> bool:
    """Whether the time stored under ``key`` is missing or at least ``days`` old."""
    last = parse_time(db.meta(key) or "")
    return last is None or now - last >= timedelta(days=days)


def check_taxon(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
                client: EnaClient | None = None, progress: bool | None = None) -> CheckResult:
    """Ask ENA for the taxon's runs and merge them; on failure raise EnaError with the stored
    data intact. Only reads the registry: `backend.jobs.stages` applies the transitions."""
    row = registry.get(taxon_id)
    log = taxon_log(taxon_id)
    db = metadata_db(settings)
    empty = not db.query("SELECT 1 FROM ena_metadata WHERE taxon = ? AND listed = 1 LIMIT 1",
                         (taxon_id,))
    full = empty or due(db, f"ena_full:{taxon_id}", now, settings.ena_full_check_days)
    since = None if full else since_date(row.last_checked)
    result = CheckResult(query=build_query(taxon_id, settings.ena_tax_match, since))
    client = client or EnaClient(settings)
    download = metadata_path(settings.data_dir, taxon_id).with_name(f".{taxon_id}.download.tsv")
    download.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = fetch_answer(client, settings, result, download, taxon_id, progress)
        merge_answer(db, taxon_id, download, result, full, progress, rows)
        if due(db, f"ena_no_files:{taxon_id}", now, settings.ena_no_files_recheck_days):
            recheck_no_files(client, settings, db, taxon_id, download, result)
            db.set_meta(f"ena_no_files:{taxon_id}", format_time(now))
    finally:
        download.unlink(missing_ok=True)
    if full:
        db.set_meta(f"ena_full:{taxon_id}", format_time(now))
    result.total = stored_rows(db, taxon_id)
    if full:  # an incremental check must not rewrite the whole export (`fetch` always does)
        refresh_metadata_export(settings, taxon_id)
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


def recheck_no_files(client: EnaClient, settings: Settings, db: Database, taxon_id: int,
                     download: Path, result: CheckResult) -> int:
    """Ask ENA again about runs excluded as ``no_files``, by accession, at most
    NO_FILES_PER_CHECK per check (the next ones next time, round the list); returns runs asked."""
    key = f"ena_no_files_next:{taxon_id}"
    start = int(db.meta(key) or 0)
    rows = db.query("SELECT seq, accession FROM runs WHERE taxon = ? AND category = 'excluded' "
                    "AND exclusion_reason LIKE 'no_files:%' AND seq > ? ORDER BY seq LIMIT ?",
                    (taxon_id, start, NO_FILES_PER_CHECK))
    accessions = [row[1] for row in rows]
    for first in range(0, len(accessions), NO_FILES_BATCH):
        query = accessions_query(accessions[first:first + NO_FILES_BATCH])
        fetch_answer(client, settings, result, download, taxon_id, False, query)
        merge_answer(db, taxon_id, download, result, full=False, progress=False)
    db.set_meta(key, str(rows[-1][0]) if len(rows) == NO_FILES_PER_CHECK else "0")
    return len(accessions)
