"""The estimate before dispatch: droplet-hours and outbound transfer, with and without assembly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from backend.compute.costs import Products, estimate, spent_today

SIZE = {"price_hourly": 0.03571, "disk": 80, "transfer": 4, "vcpus": 2}
GB = 10**9


def test_assembly_costs_droplet_hours_and_saves_transfer_against_reads():
    chunks = [300 * GB, 300 * GB]
    reads = estimate(chunks, SIZE, fetch_mbps=50, egress_price_per_gib=0.10)
    contigs = estimate(chunks, SIZE, fetch_mbps=50, egress_price_per_gib=0.10,
                       products=Products("assembly", mb_per_core_minute=20, cores=8))

    assert contigs.hours > reads.hours  # assembling takes droplet time
    assert contigs.egress_gib < reads.egress_gib / 40
    assert contigs.saving_vs_reads == round(reads.total - contigs.total, 4) > 0
    assert "less than bringing home the reads" in contigs.text()


def test_slow_assembly_on_few_cores_can_cost_more_than_cheap_transfer_and_says_so():
    chunks = [300 * GB]
    contigs = estimate(chunks, SIZE, 50, 0.01, Products("assembly", 20, 2))
    assert contigs.saving_vs_reads < 0  # shown as it is, not hidden


def test_both_brings_home_more_than_reads_alone():
    chunks = [100 * GB]
    reads = estimate(chunks, SIZE, 50, 0.01)
    both = estimate(chunks, SIZE, 50, 0.01, Products("both", 20, 2))
    assert both.egress_gib > reads.egress_gib
    assert both.saving_vs_reads < 0


def test_the_daily_spend_counts_the_hours_assembly_keeps_droplets_alive():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    records = [SimpleNamespace(bytes=300 * GB, created_at=now - timedelta(hours=1)),
               SimpleNamespace(bytes=300 * GB, created_at=now - timedelta(days=1))]  # yesterday
    reads = spent_today(records, SIZE, now, 50, 0.0)
    contigs = spent_today(records, SIZE, now, 50, 0.0, Products("assembly", 20, 2))
    assert reads == estimate([300 * GB], SIZE, 50, 0.0).total > 0
    assert contigs == estimate([300 * GB], SIZE, 50, 0.0, Products("assembly", 20, 2)).total
    assert contigs > reads
