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


#: Contigs and their report per byte of reads: a ~5 MB bacterial assembly from ~300 MB of
#: reads is 1/60; the estimate uses 1/50 to err on the side of cost.
ASSEMBLY_FRACTION = 0.02


@dataclass(frozen=True)
class Products:
    """What workers bring home, and how fast they assemble (for the estimate)."""

    kind: str = "reads"                 # reads, assembly or both
    mb_per_core_minute: float = 20.0
    cores: int = 1

    def home_bytes(self, reads: int) -> int:
        if self.kind == "reads":
            return reads
        contigs = int(reads * ASSEMBLY_FRACTION)
        return contigs + (reads if self.kind == "both" else 0)

    def assembly_hours(self, reads: int) -> float:
        if self.kind == "reads":
            return 0.0
        return reads / 1e6 / (self.mb_per_core_minute * max(1, self.cores)) / 60


@dataclass(frozen=True)
class Estimate:
    droplets: int
    hours: float
    droplet_cost: float
    egress_gib: float
    allowance_gib: float
    egress_cost: float
    products: str = "reads"
    saving_vs_reads: float = 0.0

    @property
    def total(self) -> float:
        return round(self.droplet_cost + self.egress_cost, 2)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total, "text": self.text()}

    def text(self) -> str:
        text = (f"{self.droplets} droplets, {self.hours:g} droplet-hours "
                f"${self.droplet_cost:.2f} + outbound {self.egress_gib:.1f} GiB (free "
                f"{self.allowance_gib:.1f} GiB) ${self.egress_cost:.2f} = ${self.total:.2f}")
        if self.products != "reads":
            more_or_less = "less" if self.saving_vs_reads >= 0 else "more"
            text += (f"; bringing home {self.products}: ${abs(self.saving_vs_reads):.2f} "
                     f"{more_or_less} than bringing home the reads")
        return text


def droplet_hours(size_bytes: int, fetch_mbps: float, extra_hours: float = 0.0) -> int:
    """Billed hours of one droplet: the download (and assembly) plus overhead, rounded up,
    one at least."""
    work = size_bytes / (fetch_mbps * 1e6) / 3600 + extra_hours
    return max(1, math.ceil(work + OVERHEAD_HOURS))


def estimate(chunk_bytes: Sequence[int], size: dict[str, float], fetch_mbps: float,
             egress_price_per_gib: float, products: Products | None = None) -> Estimate:
    products = products or Products()
    plain = _estimate(chunk_bytes, size, fetch_mbps, egress_price_per_gib, Products())
    if products.kind == "reads":
        return plain
    mine = _estimate(chunk_bytes, size, fetch_mbps, egress_price_per_gib, products)
    return Estimate(**{**asdict(mine), "products": products.kind,
                       "saving_vs_reads": round(plain.total - mine.total, 4)})


def _estimate(chunk_bytes: Sequence[int], size: dict[str, float], fetch_mbps: float,
              egress_price_per_gib: float, products: Products) -> Estimate:
    hours = [droplet_hours(b, fetch_mbps, products.assembly_hours(b)) for b in chunk_bytes]
    allowance = sum(size["transfer"] * 1024 * h / HOURS_PER_MONTH for h in hours)  # TB -> GiB
    egress = sum(products.home_bytes(b) for b in chunk_bytes) / GIB
    return Estimate(
        droplets=len(chunk_bytes), hours=float(sum(hours)),
        droplet_cost=round(sum(hours) * size["price_hourly"], 4),
        egress_gib=round(egress, 3), allowance_gib=round(allowance, 3),
        egress_cost=round(max(0.0, egress - allowance) * egress_price_per_gib, 4),
    )


def products_of(settings: Any, cores: int) -> Products:
    return Products(settings.worker_products, settings.assembly_mb_per_core_minute, cores)


def spent_today(records: Sequence[Any], size: dict[str, float], now: datetime,
                fetch_mbps: float, egress_price_per_gib: float,
                products: Products | None = None) -> float:
    """Estimate of today's spend (UTC day): the estimate of every droplet started today, with
    the hours its assembly keeps it alive."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [r.bytes for r in records if r.created_at >= midnight]
    if not today:
        return 0.0
    return estimate(today, size, fetch_mbps, egress_price_per_gib, products).total
