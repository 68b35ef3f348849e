"""Fair turns: a taxon whose last pass failed for a transient cause waits before its next turn.

The wait doubles with each failure in a row up to a cap, and is kept in the state database
(not in registry columns), so a ``serve`` restart or a cron ``tick`` honours it too. While a
taxon waits, :func:`backend.jobs.due.pick_due` serves the others, so one bad taxon never starves
the rest. A pass that gets through clears the wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.state.circuit import MAX_ERROR_CHARS, backoff
from backend.state.store import database_of
from backend.timeutil import format_time, parse_time

SCHEMA = """
CREATE TABLE IF NOT EXISTS taxon_backoff (
    taxon INTEGER PRIMARY KEY,
    failures INTEGER NOT NULL,
    next_try TEXT NOT NULL,
    last_error TEXT NOT NULL
)
"""



@dataclass(frozen=True)
class Wait:
    taxon: int
    failures: int
    next_try: datetime
    last_error: str


def taxon_failed(settings: Any, taxon: int, error: str, now: datetime) -> Wait:
    """Count a transient failure of the taxon's pass; returns when it is tried next."""
    database = database_of(settings).ensure(SCHEMA)
    with database.write() as con:
        row = con.execute("SELECT failures FROM taxon_backoff WHERE taxon = ?",
                          (taxon,)).fetchone()
        failures = (row[0] if row else 0) + 1
        wait = Wait(taxon, failures, now + backoff(failures, settings.taxon_backoff_seconds,
                                                   settings.taxon_backoff_max_seconds),
                    error.strip()[:MAX_ERROR_CHARS])
        con.execute(
            "INSERT INTO taxon_backoff (taxon, failures, next_try, last_error) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (taxon) DO UPDATE SET failures = "
            "excluded.failures, next_try = excluded.next_try, last_error = excluded.last_error",
            (taxon, wait.failures, format_time(wait.next_try), wait.last_error))
    return wait


def taxon_passed(settings: Any, taxon: int) -> None:
    """The taxon's pass got through: its next turn comes as usual."""
    database = database_of(settings).ensure(SCHEMA)
    if database.query("SELECT 1 FROM taxon_backoff WHERE taxon = ?", (taxon,)):
        with database.write() as con:
            con.execute("DELETE FROM taxon_backoff WHERE taxon = ?", (taxon,))


def waits(settings: Any) -> dict[int, Wait]:
    """Every taxon now waiting or having waited, by taxon (the heartbeat compares to now)."""
    rows = database_of(settings).ensure(SCHEMA).query("SELECT * FROM taxon_backoff")
    found = {}
    for row in rows:
        next_try = parse_time(row["next_try"])
        if next_try is not None:
            found[row["taxon"]] = Wait(row["taxon"], row["failures"], next_try,
                                       row["last_error"])
    return found


def waiting(settings: Any, now: datetime) -> dict[int, dict[str, Any]]:
    """Taxa waiting their backoff now, as JSON by taxon: for the dashboard and the taxon page."""
    return {taxon: {"failures": wait.failures, "next_try": format_time(wait.next_try),
                    "last_error": wait.last_error}
            for taxon, wait in waits(settings).items() if wait.next_try > now}
