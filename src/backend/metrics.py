"""What the daemon reports about itself: a status object and Prometheus metrics.

Counters are incremented where things happen (jobs, callbacks); gauges are computed from the
state files when ``/metrics`` is scraped, so they can never drift from what is on disk.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from backend.accessions import counts_by_taxon
from backend.registry import Registry
from backend.settings import Settings
from backend.store import database_of
from backend.timeutil import utc_now
from backend.workers import WorkerStore

COUNTERS = CollectorRegistry()
JOB_RUNS = PromCounter("microfetch_job_runs", "Job runs, by job.", ["job"], registry=COUNTERS)
JOB_FAILURES = PromCounter("microfetch_job_failures", "Job runs that raised, by job.", ["job"],
                           registry=COUNTERS)
CALLBACK_REJECTIONS = PromCounter("microfetch_callback_rejections",
                                  "Worker callbacks refused, by reason.", ["reason"],
                                  registry=COUNTERS)


@dataclass
class DaemonStatus:
    """The daemon's own state, shared with the web app (``/healthz``)."""

    heartbeat_seconds: int = 60
    scheduler_running: bool = False
    stopping: bool = False
    started_at: datetime | None = None
    last_heartbeat: datetime | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def problems(self, now: datetime) -> list[str]:
        """Why the daemon is unhealthy; empty when healthy."""
        found = []
        if not self.scheduler_running:
            found.append("the scheduler is not running")
        limit = 3 * self.heartbeat_seconds + 60
        if self.scheduler_running and self.started_at and \
                (now - (self.last_heartbeat or self.started_at)).total_seconds() > limit:
            found.append(f"no heartbeat for more than {limit} s")
        return found


def record_job(status: DaemonStatus, job: str, ok: bool, detail: str = "") -> None:
    JOB_RUNS.labels(job).inc()
    if not ok:
        JOB_FAILURES.labels(job).inc()
    now = utc_now()
    with status.lock:
        status.jobs[job] = {"ok": ok, "detail": detail[:500], "at": now}
        if job == "heartbeat":
            status.last_heartbeat = now


class StateCollector(Collector):
    """Gauges read from the registry, accession lists and worker records at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = Registry.from_settings(self.settings).load()
        taxa = GaugeMetricFamily("microfetch_taxa", "Taxa by last_run_status.",
                                 labels=["status"])
        for status, count in sorted(Counter(r.last_run_status.value or "new" for r in rows)
                                    .items()):
            taxa.add_metric([status], count)
        yield taxa
        workers = GaugeMetricFamily("microfetch_live_workers", "Live workers, by backend.",
                                    labels=["backend"])
        for backend, count in sorted(Counter(r.backend for r in
                                             WorkerStore.of(self.settings).live()).items()):
            workers.add_metric([backend], count)
        yield workers
        counts = counts_by_taxon(database_of(self.settings))
        registered = {row.taxonomy_id for row in rows}
        mine = [c for taxon, c in counts.items() if taxon in registered]
        runs = sum(c[k]["runs"] for c in mine for k in ("pending", "assigned", "fetched"))
        fetched = sum(c["fetched"]["runs"] for c in mine)
        size = sum(c["fetched"]["bytes"] for c in mine)
        yield GaugeMetricFamily("microfetch_runs_wanted", "Runs selected, all taxa.", value=runs)
        yield GaugeMetricFamily("microfetch_runs_fetched", "Runs fetched and verified.",
                                value=fetched)
        yield GaugeMetricFamily("microfetch_bytes_fetched", "Bytes fetched and verified.",
                                value=size)
