"""Admin actions, written once for the CLI, the JSON API and the pages.

Each action names who acted through which interface (``cli:alice``, ``api:admin``,
``web:admin``); the history keeps that as the actor, so a page can say which interface made a
change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from backend.errors import UsageError
from backend.state.exports import export_taxon
from backend.state.registry import Registry
from backend.state.transitions import cleared, parked, retried


class Interface(StrEnum):
    CLI = "cli"
    API = "api"
    WEB = "web"


def actor(interface: Interface, who: str) -> str:
    """The history's actor for a person acting through an interface."""
    return f"{interface.value}:{who}"


@dataclass(frozen=True)
class Admin:
    """The admin actions on one installation, done as ``actor``."""

    settings: Any
    actor: str

    @property
    def registry(self) -> Registry:
        return Registry.from_settings(self.settings)

    def park(self, taxon_id: int, reason: str) -> None:
        """Set ``needs_attention``: the daemon leaves the taxon alone until it is cleared."""
        reason = " ".join(reason.split())
        if not reason:
            raise UsageError("the reason is empty; say why the taxon is parked, e.g. "
                             "'disk full'")
        # A person's words are the whole reason, and replace any other.
        parked(self.registry, taxon_id, self.actor, reason, "", replace=True, must_exist=True)

    def clear(self, taxon_id: int) -> str:
        """Clear ``needs_attention``; returns what it said (empty when it was not parked)."""
        return cleared(self.registry, taxon_id, self.actor)

    def set_priority(self, taxon_id: int, priority: int) -> int:
        """Change a taxon's priority (higher goes first); returns the old one."""
        registry = self.registry
        with registry.transaction(self.actor) as table:
            row = table.row(taxon_id)
            old, row.priority = row.priority, priority
        return old

    def retry(self, taxon_id: int) -> int:
        """Runs that failed, or were given up on, back to pending; returns how many."""
        count = retried(self.settings, taxon_id, self.actor)
        export_taxon(self.settings, taxon_id)
        return count

    def remove(self, taxon_ids: Sequence[int]) -> None:
        """Remove rows from the registry, all or none (files are kept)."""
        with self.registry.transaction(self.actor) as table:
            for taxon_id in taxon_ids:
                table.row(taxon_id)  # every id must exist before anything is removed
            for taxon_id in taxon_ids:
                del table[taxon_id]
