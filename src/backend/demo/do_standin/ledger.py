"""What the stand-in cloud would have billed: every droplet's life, its hours and their price.

DigitalOcean bills a droplet per started hour with a one-hour minimum, from creation until it is
destroyed, powered on or not. The arithmetic is a pure function of the entries and ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.timeutil import format_time


@dataclass
class LedgerEntry:
    """One droplet's life as the cloud saw it."""

    id: int
    name: str
    size: str
    address: str
    created_at: datetime
    destroyed_at: datetime | None = None

    def hours(self, now: datetime) -> float:
        end = self.destroyed_at or now
        return max(0.0, (end - self.created_at).total_seconds() / 3600)


def billed_hours(hours: float) -> int:
    """Every started hour counts, and a droplet costs at least one hour."""
    return max(1, math.ceil(round(hours, 9)))  # round: 1.0000000001 h of float noise is 1 h


def ledger(entries: list[LedgerEntry], prices: dict[str, float], now: datetime) -> dict[str, Any]:
    """The ledger as JSON: per droplet, totals and what is still live (and billing) now."""
    droplets = []
    for entry in entries:
        hours = entry.hours(now)
        billed = billed_hours(hours)
        price = prices.get(entry.size, 0.0)
        droplets.append({
            "id": entry.id, "name": entry.name, "size": entry.size, "address": entry.address,
            "created_at": format_time(entry.created_at),
            "destroyed_at": format_time(entry.destroyed_at) if entry.destroyed_at else None,
            "hours": round(hours, 6), "billed_hours": billed,
            "price_hourly": price, "cost": round(billed * price, 5),
        })
    live = [d["name"] for d in droplets if d["destroyed_at"] is None]
    return {
        "now": format_time(now),
        "created": len(droplets),
        "destroyed": len(droplets) - len(live),
        "live": live,
        "hours": round(sum(d["hours"] for d in droplets), 6),
        "billed_hours": sum(d["billed_hours"] for d in droplets),
        "cost": round(sum(d["cost"] for d in droplets), 5),
        "droplets": droplets,
    }


def render(book: dict[str, Any]) -> str:
    """The ledger for a person: one line per droplet, then the totals."""
    lines = [f"{'droplet':<24} {'size':<14} {'address':<12} {'hours':>9} {'billed':>6} "
             f"{'cost $':>9}  destroyed"]
    for d in book["droplets"]:
        lines.append(f"{d['name']:<24} {d['size']:<14} {d['address']:<12} {d['hours']:>9.4f} "
                     f"{d['billed_hours']:>6} {d['cost']:>9.5f}  {d['destroyed_at'] or 'LIVE'}")
    lines.append(f"{book['created']} created, {book['destroyed']} destroyed, "
                 f"{len(book['live'])} live; {book['hours']:.4f} droplet-hours elapsed, "
                 f"{book['billed_hours']} billed, ${book['cost']:.5f}")
    return "\n".join(lines)
