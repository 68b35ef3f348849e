"""What the pages and the API show, computed from the state files (pure reads)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import UnknownTaxonError
from backend.logs import taxon_log_path
from backend.settings import Settings
from backend.state.accessions import AccessionList, counts_by_taxon, empty_counts
from backend.state.registry import Registry, Taxon
from backend.state.store import Database, database_of
from backend.state.workers import WorkerRecord, WorkerStore
from backend.timeutil import format_time


@dataclass
class Progress:
    wanted: int
    fetched: int
    pending: int
    assigned: int
    failed: int
    excluded: int
    bytes_wanted: int
    bytes_fetched: int

    @property
    def percent(self) -> float:
        return round(100.0 * self.fetched / self.wanted, 1) if self.wanted else 0.0


def progress(counts: dict[str, dict[str, int]]) -> Progress:
    """Progress from a taxon's counts (kept by the database, no scan of its runs)."""
    wanted = ("pending", "assigned", "fetched")
    return Progress(
        wanted=sum(counts[c]["runs"] for c in wanted), fetched=counts["fetched"]["runs"],
        pending=counts["pending"]["runs"], assigned=counts["assigned"]["runs"],
        failed=counts["failed"]["runs"],
        excluded=sum(counts[c]["runs"] for c in ("failed", "excluded", "withdrawn")),
        bytes_wanted=sum(counts[c]["bytes"] for c in wanted),
        bytes_fetched=counts["fetched"]["bytes"],
    )


def worker_json(record: WorkerRecord) -> dict[str, Any]:
    return {"name": record.name, "backend": record.backend, "address": record.address,
            "phase": record.phase.value, "runs": len(record.runs), "bytes": record.bytes,
            "created_at": format_time(record.created_at)}


def taxon_state(settings: Settings, row: Taxon, updated: str,
                workers: list[WorkerRecord],
                counts: dict[str, dict[str, int]] | None = None,
                db: Database | None = None, run_errors: bool = True) -> dict[str, Any]:
    """One taxon as the API shows it (like pacifica-ingest's get_state).

    ``run_errors=False`` looks up the newest run error only for a taxon in error or warning
    (what the overview shows of it): one query less per taxon, 2,000 of them on a large site.
    """
    db = db or database_of(settings)
    done = progress(counts if counts is not None
                    else AccessionList(db, row.taxonomy_id).counts())
    wanted = run_errors or row.last_run_status.value in ("error", "warning")
    last_error = row.needs_attention or (AccessionList(db, row.taxonomy_id).last_error()
                                         if done.wanted and wanted else "")
    return {
        "taxonomy_id": row.taxonomy_id,
        "scientific_name": row.scientific_name,
        "state": row.last_run_status.value or "new",
        "stage": row.stage.value,
        "stage_name": row.stage_name,
        "task_percent": done.percent,
        "runs": {"wanted": done.wanted, "fetched": done.fetched, "pending": done.pending,
                 "assigned": done.assigned, "failed": done.failed, "excluded": done.excluded},
        "bytes_wanted": done.bytes_wanted,
        "bytes_fetched": done.bytes_fetched,
        "needs_attention": row.needs_attention,
        "last_error": last_error,
        "last_checked": format_time(row.last_checked),
        "priority": row.priority,
        "updated": updated,
        "workers": [worker_json(w) for w in workers if w.taxon_id == row.taxonomy_id],
    }


def last_updates(db: Database) -> dict[int, str]:
    """When each taxon's history last changed (kept by a trigger, no scan of history)."""
    return {taxon: time for taxon, time in db.query("SELECT taxon, time FROM taxon_updates")}


_rows_cache: dict[str, tuple[tuple[int, int, int], list[Taxon]]] = {}
_rows_lock = threading.Lock()


def registry_rows(settings: Settings) -> list[Taxon]:
    """The registry's rows, parsed again only when the file changed.

    Every page asks for them and 2,000 rows take ~50 ms to parse; the registry replaces its
    file atomically on each write, so a new inode, size or mtime says it changed.
    """
    registry = Registry.from_settings(settings)
    try:
        info = registry.path.stat()
    except OSError:
        return registry.load()  # missing or unreadable: the registry says why
    key = (info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _rows_cache.get(str(registry.path))
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = registry.load()
    with _rows_lock:
        _rows_cache[str(registry.path)] = (key, rows)
    return rows


def registry_row(settings: Settings, taxon_id: int) -> Taxon:
    """One row; UnknownTaxonError when the taxon is not in the registry."""
    for row in registry_rows(settings):
        if row.taxonomy_id == taxon_id:
            return row
    raise UnknownTaxonError(taxon_id, settings.csv_path)


def all_states(settings: Settings, run_errors: bool = True) -> list[dict[str, Any]]:
    """Every taxon's state (see :func:`taxon_state` for ``run_errors``)."""
    db = database_of(settings)
    updated = last_updates(db)
    counts = counts_by_taxon(db)
    live = WorkerStore.of(settings).live()
    return [taxon_state(settings, row, updated.get(row.taxonomy_id, ""), live,
                        counts.get(row.taxonomy_id, empty_counts()), db, run_errors)
            for row in registry_rows(settings)]


_reasons_cache: dict[tuple[str, int], tuple[tuple[int, ...], dict[str, int]]] = {}


def exclusion_counts(settings: Settings, taxon_id: int) -> dict[str, int]:
    """Excluded runs by the code their reason starts with.

    Counting reads every left-out run of the taxon (100,000s in a large one), so the answer
    is kept while the taxon's counts of left-out runs stay the same: a reason changes with
    them (a run is excluded, included, or withdrawn), not on its own.
    """
    db = database_of(settings)
    counts = counts_by_taxon(db, taxon_id).get(taxon_id, empty_counts())
    key = tuple(counts[c]["runs"] for c in ("failed", "excluded", "withdrawn"))
    cached = _reasons_cache.get((str(db.path), taxon_id))
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = db.query(
        "SELECT substr(exclusion_reason, 1, instr(exclusion_reason, ':') - 1), count(*) "
        "FROM runs WHERE taxon = ? AND is_excluded = 1 GROUP BY 1", (taxon_id,))
    found = dict(sorted((code, count) for code, count in rows))
    _reasons_cache[(str(db.path), taxon_id)] = (key, found)
    return found


def log_tail(settings: Settings, taxon_id: int, lines: int = 40) -> list[str]:
    """The last lines of the taxon's log, each traceback replaced by one line saying so."""
    assert settings.log_dir is not None
    path: Path = taxon_log_path(settings.log_dir, taxon_id)
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64_000))
        text = handle.read().decode("utf-8", "replace").splitlines()
    return without_tracebacks(text)[-lines:]


#: A log record starts with its date; anything else after a traceback's first line is part
#: of the traceback (frames, source lines, loguru's variable markers, the exception line).
RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]")
TRACEBACK_START = ("Traceback (most recent call last)", "During handling of the above",
                   "The above exception was the direct cause")
OMITTED = "(a traceback was left out here: the log file on the server has it)"


def without_tracebacks(lines: list[str]) -> list[str]:
    """``lines`` with every traceback dropped: a page shows what failed, not a stack."""
    kept: list[str] = []
    inside = False
    for line in lines:
        if line.lstrip().startswith(TRACEBACK_START):
            if not inside:
                kept.append(OMITTED)
            inside = True
        elif inside and RECORD_START.match(line):
            inside = False
        if not inside:
            kept.append(line)
    return kept


#: Who made a change, by the prefix of the history's actor.
INTERFACES = {"web:": "web page", "api:": "JSON API", "cli:": "command line",
              "daemon": "daemon", "dispatcher": "daemon (dispatch)",
              "collector": "daemon (collection)", "check": "daemon (ENA check)",
              "reconciler": "daemon (reconciliation)", "names": "daemon (taxonomy names)"}


def interface_of(actor: str) -> str:
    """Which interface an actor made a change through, in words."""
    for prefix, words in INTERFACES.items():
        if actor.startswith(prefix):
            who = actor[len(prefix):] if prefix.endswith(":") else ""
            return f"{words} ({who})" if who and who != "admin" else words
    return "command line or script (user " + actor + ")" if actor else "unknown"


def change_text(entry: dict[str, Any]) -> str:
    """One history entry's change in words."""
    field, old, new = entry["field"], entry.get("old"), entry.get("new")
    if field == "row":
        return "added to the registry" if new else "removed from the registry"
    if field == "needs_attention":
        return f"parked: {new}" if new else "released (needs_attention cleared)"
    if isinstance(new, dict):
        return str(new.get("text") or ", ".join(f"{k} {v}" for k, v in sorted(new.items())))
    if old in (None, ""):
        return f"{field} set to {new!s}" if new not in (None, "") else f"{field} noted"
    return f"{field}: {old!s} → {new!s}"
