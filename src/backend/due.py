"""Which taxon the heartbeat takes next: a pure function of the rows and the time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from backend.registry import Stage, Taxon


def is_due(row: Taxon, now: datetime, recheck: timedelta, capacity_free: bool) -> bool:
    """DESIGN's due rule; ``filter`` is due at once (a check finished, its filter did not)."""
    if row.needs_attention:
        return False
    if row.stage is Stage.CHECK:
        return row.last_checked is None or now - row.last_checked >= recheck
    if row.stage is Stage.FILTER:
        return True
    if row.stage is Stage.DISPATCH:
        return capacity_free
    return False


def pick_due(rows: Iterable[Taxon], now: datetime, recheck: timedelta,
             capacity_free: bool) -> Taxon | None:
    """The due taxon with the highest priority, then never checked, then checked longest ago."""
    due = [row for row in rows if is_due(row, now, recheck, capacity_free)]
    if not due:
        return None
    return min(due, key=lambda r: (-r.priority, r.last_checked is not None,
                                   r.last_checked or now))
