"""The `check` stage: a taxon's read_run metadata from ENA into ``ENA_metadata/<taxon>.csv``.

After the first check only runs new or changed since ``last_checked`` are asked for (with a day
of overlap: ENA dates have day resolution), and the answer is merged into the stored file: no
duplicate runs, a changed run replaces its old row. The answer is streamed to a temporary file
and verified against ENA's count before anything stored is touched, so on any error the stored
metadata and accession list stay byte-for-byte as they were.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from backend.ena import FIELDS, EnaClient, EnaError
from backend.logs import taxon_log
from backend.registry import Registry, Stage, Status
from backend.settings import Settings
from backend.statefile import locked, read_json, write_json

ACTOR = "check"
FAILURES_BEFORE_ERROR = 3


@dataclass(frozen=True)
class CheckResult:
    query: str
    seen: int
    new: int
    changed: int
    total: int


def build_query(taxon_id: int, tax_match: str, since: date | None) -> str:
    term = f"tax_tree({taxon_id})" if tax_match == "tree" else f"tax_eq({taxon_id})"
    return f"{term} AND last_updated>={since.isoformat()}" if since else term


def since_date(last_checked: datetime | None) -> date | None:
    """The day to ask from: a day before the last check, as ENA dates have day resolution."""
    return (last_checked - timedelta(days=1)).date() if last_checked else None


def metadata_path(data_dir: Path, taxon_id: int) -> Path:
    return Path(data_dir) / "ENA_metadata" / f"{taxon_id}.csv"


def check_taxon(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
                client: EnaClient | None = None, progress: bool | None = None) -> CheckResult:
    """Ask ENA for the taxon's runs and merge them; on failure mark the taxon, raise EnaError."""
    row = registry.get(taxon_id)
    log = taxon_log(taxon_id)
    query = build_query(taxon_id, settings.ena_tax_match, since_date(row.last_checked))
    registry.update(taxon_id, ACTOR, last_run_status=Status.IN_PROGRESS, stage=Stage.CHECK)
    target = metadata_path(settings.data_dir, taxon_id)
    download = target.with_name(f".{taxon_id}.download.tsv")
    target.parent.mkdir(parents=True, exist_ok=True)
    client = client or EnaClient(settings)
    try:
        rows = client.search_to_file(query, FIELDS, download, taxon_id, progress)
        expected = client.count(query, taxon_id)
        if rows != expected:
            raise EnaError(f"ENA sent {rows} rows for {query!r} but counts {expected}: the "
                           "answer was cut short; it is tried again at the taxon's next turn",
                           taxon=taxon_id)
        seen, new, changed, total = merge_metadata(download, target)
    except EnaError as exc:
        record_failure(settings, registry, taxon_id, str(exc))
        log.warning("check failed: {}", exc)
        raise
    finally:
        download.unlink(missing_ok=True)
    clear_failures(settings, taxon_id)
    registry.update(taxon_id, ACTOR, last_checked=now, stage=Stage.FILTER,
                    generated_warning=False)
    log.info("checked ENA with {!r}: {} runs seen, {} new, {} changed, {} stored",
             query, seen, new, changed, total)
    return CheckResult(query, seen, new, changed, total)


def merge_metadata(download: Path, target: Path) -> tuple[int, int, int, int]:
    """Merge a downloaded TSV into the stored CSV; (seen, new, changed, total).

    A first answer is converted row by row; a later one (usually small: only recent changes)
    is held by accession while the stored file streams past it.
    """
    with locked(target):
        if not target.exists():
            return _convert(download, target)
        incoming = _read_tsv(download)
        seen, new, changed, total = len(incoming), 0, 0, 0
        tmp = target.with_name(f".{target.name}.merge")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, FIELDS, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for old in _read_csv(target):
                fresh = incoming.pop(old.get("run_accession", ""), None)
                if fresh is not None and any(fresh.get(f, "") != old.get(f, "") for f in FIELDS):
                    changed += 1
                writer.writerow(fresh or old)
                total += 1
            for fresh in incoming.values():
                writer.writerow(fresh)
                new += 1
                total += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    return seen, new, changed, total


def _convert(download: Path, target: Path) -> tuple[int, int, int, int]:
    """A first answer, TSV to CSV row by row, columns put in FIELDS order."""
    tmp = target.with_name(f".{target.name}.merge")
    rows = 0
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        if download.stat().st_size:
            with open(download, newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle, delimiter="\t")
                header = next(reader)
                order = [header.index(f) if f in header else None for f in FIELDS]
                for values in reader:
                    writer.writerow(["" if i is None or i >= len(values) else values[i]
                                     for i in order])
                    rows += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    return rows, rows, 0, rows


def _read_tsv(path: Path) -> dict[str, dict[str, str]]:
    """The downloaded answer by run accession (the last row of a run wins)."""
    if path.stat().st_size == 0:
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["run_accession"]: row for row in csv.DictReader(handle, delimiter="\t")
                if row.get("run_accession")}


def _read_csv(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


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
