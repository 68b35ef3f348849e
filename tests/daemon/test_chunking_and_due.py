"""Chunking by bytes and the due rule, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from backend.jobs.chunking import Item, plan_chunks
from backend.jobs.due import is_due, pick_due
from backend.state.registry import Stage, Taxon

GB = 10**9
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def skewed_sizes(count: int, seed: int) -> list[int]:
    """Like ENA: most runs a few hundred MB, a few runs tens of GB."""
    rng = random.Random(seed)
    sizes = [int(rng.lognormvariate(19.5, 0.6)) for _ in range(count)]
    for index in rng.sample(range(count), 3):
        sizes[index] = rng.randint(20, 40) * GB
    return sizes


@pytest.mark.parametrize("seed", range(5))
def test_chunks_by_bytes_are_even_where_equal_count_splitting_is_far_off(seed):
    sizes = skewed_sizes(600, seed)
    items = [Item(f"ERR{i:07d}", size) for i, size in enumerate(sizes)]
    capacity = 60 * GB
    plan = plan_chunks(items, capacity, max_items=1000)
    loads = [sum(i.size for i in chunk) for chunk in plan.chunks]
    mean = sum(loads) / len(loads)
    assert max(sizes) <= mean
    assert max(loads) <= 1.10 * mean
    assert all(load <= capacity for load in loads)
    assert sorted(i.key for c in plan.chunks for i in c) == sorted(i.key for i in items)

    per = -(-len(items) // len(loads))  # equal-count split into as many chunks
    equal = [sum(sizes[i:i + per]) for i in range(0, len(sizes), per)]
    assert max(equal) > 1.25 * (sum(equal) / len(equal))


def test_a_run_larger_than_a_worker_is_set_aside():
    plan = plan_chunks([Item("ERR1", 5 * GB), Item("ERR2", 50 * GB)], capacity=10 * GB,
                       max_items=10)
    assert [i.key for i in plan.too_large] == ["ERR2"]
    assert [[i.key for i in c] for c in plan.chunks] == [["ERR1"]]


def test_the_run_cap_splits_many_small_runs():
    plan = plan_chunks([Item(f"ERR{i}", 100) for i in range(25)], capacity=GB, max_items=10)
    assert sorted(len(c) for c in plan.chunks) == [8, 8, 9]


def test_chunks_never_exceed_the_capacity_even_when_packing_is_tight():
    items = [Item(f"ERR{i}", s) for i, s in enumerate([6, 6, 6, 4, 4, 4])]
    plan = plan_chunks(items, capacity=10, max_items=10)
    assert all(sum(i.size for i in c) <= 10 for c in plan.chunks)
    assert sum(len(c) for c in plan.chunks) == 6


def row(taxon: int, **fields) -> Taxon:
    return Taxon(taxon, **fields)


def test_a_never_checked_taxon_is_due_and_a_fresh_one_is_not():
    assert is_due(row(1), NOW, DAY, capacity_free=False)
    assert not is_due(row(1, last_checked=NOW - timedelta(hours=2)), NOW, DAY, False)
    assert is_due(row(1, last_checked=NOW - timedelta(hours=25)), NOW, DAY, False)


def test_a_parked_taxon_is_never_due():
    assert not is_due(row(1, needs_attention="disk full"), NOW, DAY, True)


def test_dispatch_waits_for_capacity_not_for_the_recheck_interval():
    fresh = row(1, stage=Stage.DISPATCH, last_checked=NOW)
    assert is_due(fresh, NOW, DAY, capacity_free=True)
    assert not is_due(fresh, NOW, DAY, capacity_free=False)


def test_waiting_and_collecting_taxa_are_left_to_the_collector():
    assert not is_due(row(1, stage=Stage.WAIT), NOW, DAY, True)
    assert not is_due(row(1, stage=Stage.COLLECT), NOW, DAY, True)


def test_the_highest_priority_then_the_oldest_check_goes_first():
    rows = [
        row(1, last_checked=NOW - timedelta(days=5)),
        row(2, last_checked=NOW - timedelta(days=9)),
        row(3),
        row(4, priority=2, last_checked=NOW - timedelta(days=2)),
    ]
    assert pick_due(rows, NOW, DAY, False).taxonomy_id == 4
    assert pick_due(rows[:3], NOW, DAY, False).taxonomy_id == 3
    assert pick_due(rows[:2], NOW, DAY, False).taxonomy_id == 2
    assert pick_due([row(5, last_checked=NOW)], NOW, DAY, False) is None


def test_a_taxon_waiting_its_backoff_lets_the_others_of_its_priority_go_first():
    rows = [row(1), row(2, last_checked=NOW - timedelta(days=3)), row(3, priority=1)]
    waiting = {1: NOW + timedelta(minutes=5), 3: NOW + timedelta(minutes=1)}
    assert pick_due(rows, NOW, DAY, False, waiting_until=waiting).taxonomy_id == 2
    assert pick_due(rows[:1], NOW, DAY, False, waiting_until=waiting) is None
    later = NOW + timedelta(minutes=2)  # 3's wait is over: its priority counts again
    assert pick_due(rows, later, DAY, False, waiting_until=waiting).taxonomy_id == 3
    assert pick_due(rows[:2], later + timedelta(minutes=5), DAY, False,
                    waiting_until=waiting).taxonomy_id == 1


def test_while_enas_checks_are_paused_only_stages_that_need_no_ena_are_due():
    rows = [row(1), row(2, stage=Stage.FILTER), row(3, stage=Stage.DISPATCH, priority=5)]
    assert pick_due(rows, NOW, DAY, False, checks_allowed=False).taxonomy_id == 2
    assert pick_due(rows, NOW, DAY, True, checks_allowed=False).taxonomy_id == 3
    assert pick_due(rows[:1], NOW, DAY, True, checks_allowed=False) is None
    assert pick_due(rows[:1], NOW, DAY, True).taxonomy_id == 1
