"""Packing pending runs into chunks by their bytes, so chunks fit a worker and finish together.

Equal-count splitting is far off on ENA's skewed sizes (a few runs are hundreds of times the
rest). Here the number of chunks is the fewest that respect the disk and the run cap, and runs
are placed largest first on the least-loaded chunk (LPT), which keeps the largest chunk near
the mean whenever no single run is larger than the mean.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    key: str
    size: int


@dataclass
class Bin:
    items: list[Item] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class Plan:
    """Chunks (largest first) and the items too large for any worker."""

    chunks: list[list[Item]]
    too_large: list[Item]


def plan_chunks(items: Sequence[Item], capacity: int, max_items: int) -> Plan:
    """Pack ``items`` into the fewest chunks of at most ``capacity`` bytes and ``max_items``."""
    if capacity <= 0 or max_items <= 0:
        raise ValueError("capacity and max_items must be positive")
    too_large = [item for item in items if item.size > capacity]
    fitting = sorted((i for i in items if i.size <= capacity), key=lambda i: (-i.size, i.key))
    if not fitting:
        return Plan([], too_large)
    total = sum(item.size for item in fitting)
    count = max(math.ceil(total / capacity), math.ceil(len(fitting) / max_items), 1)
    while True:
        bins = _pack(fitting, count, capacity, max_items)
        if bins is not None:
            chunks = [b.items for b in sorted(bins, key=lambda b: -b.size) if b.items]
            return Plan(chunks, too_large)
        count += 1


def _pack(items: Sequence[Item], count: int, capacity: int, max_items: int) -> list[Bin] | None:
    """LPT onto ``count`` bins; None when some item fits in no bin (then try one more bin)."""
    bins = [Bin() for _ in range(count)]
    heap = [(0, index) for index in range(count)]
    for item in items:
        skipped = []
        placed = False
        while heap:
            load, index = heapq.heappop(heap)
            target = bins[index]
            if target.size + item.size <= capacity and len(target.items) < max_items:
                target.items.append(item)
                target.size += item.size
                heapq.heappush(heap, (target.size, index))
                placed = True
                break
            skipped.append((load, index))
        for entry in skipped:
            heapq.heappush(heap, entry)
        if not placed:
            return None
    return bins
