"""What a dispatch to DigitalOcean costs: droplet-hours and outbound transfer.

DigitalOcean bills a droplet by the hour, one hour at least, until it is destroyed. Inbound
traffic (from ENA) is free; outbound (rsync home) is free up to the size's ``transfer``
allowance (TB a month, prorated by the hours the droplet lives, out of a 730-hour month) and
billed per GiB beyond it. For short-lived droplets moving raw FASTQ home the transfer can cost
far more than the droplet-hours, so the estimate shows both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

HOURS_PER_MONTH = 730
GIB = 1024**3
#: Boot, install and rsync home take time on top of the download itself.
OVERHEAD_HOURS = 0.25


@dataclass(frozen=True)
class Estimate:
    droplets: int
    hours: float
    droplet_cost: float
    egress_gib: float
    allowance_gib: float
    egress_cost: float

    @property
    def total(self) -> float:
        return round(self.droplet_cost + self.egress_cost, 2)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total, "text": self.text()}

    def text(self) -> str:
        return (f"{self.droplets} droplets, {self.hours:g} droplet-hours ${self.droplet_cost:.2f}"
                f" + outbound {self.egress_gib:.1f} GiB (free {self.allowance_gib:.1f} GiB) "
                f"${self.egress_cost:.2f} = ${self.total:.2f}")


def droplet_hours(size_bytes: int, fetch_mbps: float) -> int:
    """Billed hours of one droplet: the download plus overhead, rounded up, one at least."""
    return max(1, math.ceil(size_bytes / (fetch_mbps * 1e6) / 3600 + OVERHEAD_HOURS))


def estimate(chunk_bytes: Sequence[int], size: dict[str, float], fetch_mbps: float,
             egress_price_per_gib: float) -> Estimate:
    hours = [droplet_hours(b, fetch_mbps) for b in chunk_bytes]
    allowance = sum(size["transfer"] * 1024 * h / HOURS_PER_MONTH for h in hours)  # TB -> GiB
    egress = sum(chunk_bytes) / GIB
    return Estimate(
        droplets=len(chunk_bytes), hours=float(sum(hours)),
        droplet_cost=round(sum(hours) * size["price_hourly"], 4),
        egress_gib=round(egress, 3), allowance_gib=round(allowance, 3),
        egress_cost=round(max(0.0, egress - allowance) * egress_price_per_gib, 4),
    )


def spent_today(records: Sequence[Any], size: dict[str, float], now: datetime,
                fetch_mbps: float, egress_price_per_gib: float) -> float:
    """Estimate of today's spend (UTC day): the estimate of every droplet started today."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [r.bytes for r in records if r.created_at >= midnight]
    return estimate(today, size, fetch_mbps, egress_price_per_gib).total if today else 0.0
