"""Which taxon the heartbeat takes next: a pure function of the rows and the time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from backend.state.registry import Stage, Taxon


def is_due(row: Taxon, now: datetime, recheck: timedelta, capacity_free: bool,
           checks_allowed: bool = True) -> bool:
    """DESIGN's due rule; ``filter`` is due at once (a check finished, its filter did not).

    ``checks_allowed`` is False while ENA's circuit pauses every check (an outage).
    """
    if row.needs_attention:
        return False
    if row.stage is Stage.CHECK:
        return checks_allowed and (row.last_checked is None or now - row.last_checked >= recheck)
    if row.stage is Stage.FILTER:
        return True
    if row.stage is Stage.DISPATCH:
        return capacity_free
    return False


def pick_due(rows: Iterable[Taxon], now: datetime, recheck: timedelta, capacity_free: bool,
             *, checks_allowed: bool = True,
             waiting_until: Mapping[int, datetime] | None = None) -> Taxon | None:
    """The due taxon with the highest priority, then never checked, then checked longest ago.

    A taxon in ``waiting_until`` (its last pass failed for a transient cause) is passed over
    until its time comes, so the others are served meanwhile; once its wait is over it takes
    its turn like any other (a turn per wait, never every heartbeat).
    """
    waiting_until = waiting_until or {}
    due = [row for row in rows
           if is_due(row, now, recheck, capacity_free, checks_allowed)
           and waiting_until.get(row.taxonomy_id, now) <= now]
    if not due:
        return None
    return min(due, key=lambda r: (-r.priority, r.last_checked is not None,
                                   r.last_checked or now))
