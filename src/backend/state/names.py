"""Scientific names looked up in the background, for taxa added through the web.

Adding taxa through the API or the pages checks the ids' form at once and looks nothing up in
the request (ENA can take tens of seconds). The heartbeat then asks ENA's taxonomy about rows
without a name, a few per beat: a known id gets its name; an id ENA does not know is parked
with the reason and what to do; an unreachable service is asked again later.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from backend.errors import OperationError
from backend.state.add_taxa import Lookup, UnknownToEna
from backend.state.registry import Registry
from backend.state.store import database_of
from backend.state.transitions import parked
from backend.timeutil import format_time, parse_time

ACTOR = "names"
#: Rows looked up per heartbeat, and how long to wait after ENA did not answer.
PER_BEAT = 20
RETRY_AFTER = timedelta(minutes=10)

SCHEMA = """
CREATE TABLE IF NOT EXISTS name_lookups (
    taxon INTEGER PRIMARY KEY,
    state TEXT NOT NULL,          -- pending, found, unknown or unreachable
    at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
)
"""


def request_lookups(settings: Any, taxon_ids: list[int], now: datetime) -> None:
    """Ask the heartbeat to look these taxa up (added through the web, no name yet)."""
    with database_of(settings).ensure(SCHEMA).write() as con:
        con.executemany("INSERT INTO name_lookups (taxon, state, at) VALUES (?, 'pending', ?) "
                        "ON CONFLICT (taxon) DO UPDATE SET state = 'pending', at = excluded.at",
                        [(taxon_id, format_time(now)) for taxon_id in taxon_ids])


def pending(settings: Any, now: datetime) -> list[int]:
    """Taxa waiting for a look-up, oldest request first."""
    db = database_of(settings).ensure(SCHEMA)
    return [taxon for taxon, state, at in db.query(
        "SELECT taxon, state, at FROM name_lookups WHERE state IN ('pending', 'unreachable') "
        "ORDER BY at") if _due(state, parse_time(at), now)]


def look_up_names(settings: Any, registry: Registry, lookup: Lookup, now: datetime,
                  limit: int = PER_BEAT) -> str:
    """Ask ENA about the taxa waiting for a name; returns what happened, in words."""
    db = database_of(settings)
    todo = pending(settings, now)[:limit]
    counts = {"found": 0, "unknown": 0, "unreachable": 0}
    for taxon_id in todo:
        state, detail = _ask(registry, lookup, taxon_id)
        counts[state] += 1
        with db.write() as con:
            con.execute("INSERT INTO name_lookups (taxon, state, at, detail) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (taxon) DO UPDATE SET state = excluded.state, "
                        "at = excluded.at, detail = excluded.detail",
                        (taxon_id, state, format_time(now), detail))
        if state == "unreachable":
            break  # ENA is not answering: the rest waits for the next try
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "nothing to look up"


def _due(state: str, at: datetime | None, now: datetime) -> bool:
    return state == "pending" or at is None or now - at >= RETRY_AFTER


def _ask(registry: Registry, lookup: Lookup, taxon_id: int) -> tuple[str, str]:
    try:
        name = lookup(taxon_id)
    except UnknownToEna as exc:
        # The first reason stays: one a person or a stage gave is kept.
        parked(registry, taxon_id, ACTOR, str(exc),
               f"check the id, then `microfetch remove-taxa {taxon_id}` (or "
               f"`microfetch attention clear {taxon_id}` to fetch it anyway)")
        return "unknown", str(exc)
    except OperationError as exc:
        return "unreachable", str(exc)
    with registry.transaction(ACTOR) as table:
        row = table.get(taxon_id)
        if row is not None:  # not removed meanwhile
            row.scientific_name = name
    return "found", name
