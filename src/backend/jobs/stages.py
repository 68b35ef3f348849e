"""The ENA stages as the heartbeat and `microfetch fetch` run them: the stage does the work and
returns what it found; the transition it leads to is applied here, not inside the stage."""

from __future__ import annotations

from datetime import datetime

from backend.ena import fetch_accession_links, parse_fetched_data
from backend.ena.client import EnaError
from backend.ena.fetch_accession_links import CheckResult
from backend.ena.parse_fetched_data import FilterResult
from backend.settings import Settings
from backend.state.registry import Registry
from backend.state.transitions import checked, checking, selected, warned

ACTOR = "check"


def check(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
          progress: bool | None = None) -> CheckResult:
    """Check the taxon against ENA: stage ``check`` while it runs, ``filter`` after; a failed
    answer leaves the old data and marks the taxon ``warning`` (the heartbeat decides the rest)."""
    checking(registry, taxon_id, ACTOR)
    try:
        result = fetch_accession_links.check_taxon(settings, registry, taxon_id, now,
                                                   progress=progress)
    except EnaError:
        warned(registry, taxon_id, ACTOR)
        raise
    checked(registry, taxon_id, now, bool(result.warnings), ACTOR)
    return result


def select(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
           progress: bool = False) -> FilterResult:
    """Decide the runs the check changed; the taxon then settles (dispatch, wait or complete)."""
    result = parse_fetched_data.filter_taxon(settings, registry, taxon_id, now, progress)
    selected(settings, registry, taxon_id, "filter")
    return result
