"""What the daemon reports about itself: a status object and Prometheus metrics.

Counters are incremented where things happen (jobs, callbacks); gauges are computed from the
state files when ``/metrics`` is scraped, so they can never drift from what is on disk.
Names follow Prometheus' conventions: a unit suffix (``_bytes``), ``_total`` on counters only,
and every label value known in advance present at 0, so "no live workers" or "no job has failed"
is a series an alert can see rather than a missing one. docs/src/web.md lists every metric.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from backend import __version__
from backend.settings import Settings
from backend.state.accessions import CATEGORIES, counts_by_taxon
from backend.state.registry import Registry, Status
from backend.state.store import database_of
from backend.state.workers import WorkerStore
from backend.timeutil import utc_now

# A `_created` sample per counter doubles the series for nothing our alerts use.
disable_created_metrics()

JOBS = ("heartbeat", "collector", "reconciler")
CALLBACK_REASONS = ("unknown_worker", "bad_token", "bad_body")
BACKENDS = ("local", "ssh", "digitalocean")
#: The ``status`` label of the run gauges: a wanted run's status, or ``excluded``.
RUN_STATES = CATEGORIES

COUNTERS = CollectorRegistry()
JOB_RUNS = PromCounter("microfetch_job_runs", "Job runs, by job.", ["job"], registry=COUNTERS)
JOB_FAILURES = PromCounter("microfetch_job_failures", "Job runs that raised, by job.", ["job"],
                           registry=COUNTERS)
CALLBACK_REJECTIONS = PromCounter("microfetch_callback_rejections",
                                  "Worker callbacks refused, by reason.", ["reason"],
                                  registry=COUNTERS)
for _job in JOBS:
    JOB_RUNS.labels(_job)
    JOB_FAILURES.labels(_job)
for _reason in CALLBACK_REASONS:
    CALLBACK_REJECTIONS.labels(_reason)


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


@dataclass
class TaxonRuns:
    """One taxon's runs by state, from the counts the database keeps."""

    by_state: Counter[str] = field(default_factory=Counter)
    wanted_bytes: int = 0
    fetched_bytes: int = 0

    @classmethod
    def of(cls, counts: dict[str, dict[str, int]]) -> TaxonRuns:
        wanted = ("pending", "assigned", "fetched")
        return cls(Counter({state: counts.get(state, {}).get("runs", 0)
                            for state in RUN_STATES}),
                   sum(counts.get(state, {}).get("bytes", 0) for state in wanted),
                   counts.get("fetched", {}).get("bytes", 0))


def _gauge(name: str, text: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=labels or [])


class StateCollector(Collector):
    """Gauges read from the registry, accession lists and worker records at scrape time.

    Each scrape reads the registry, the worker records and each taxon's runs once.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = _gauge("microfetch_build_info", "Always 1; the version is a label.", ["version"])
        info.add_metric([__version__], 1)
        yield info
        rows = Registry.from_settings(self.settings).load()
        yield self._taxa(Counter(r.last_run_status.value or "new" for r in rows))
        yield self._workers(Counter(r.backend for r in
                                    WorkerStore.of(self.settings).live()))
        counts = counts_by_taxon(database_of(self.settings))
        per_taxon = {row.taxonomy_id: TaxonRuns.of(counts.get(row.taxonomy_id, {}))
                     for row in rows}
        yield from self._runs(per_taxon)

    @staticmethod
    def _taxa(counts: Counter[str]) -> GaugeMetricFamily:
        taxa = _gauge("microfetch_taxa", "Taxa by last_run_status (new when empty).", ["status"])
        known = [s.value or "new" for s in Status]
        for status in sorted(set(known) | set(counts)):
            taxa.add_metric([status], counts[status])
        return taxa

    @staticmethod
    def _workers(counts: Counter[str]) -> GaugeMetricFamily:
        workers = _gauge("microfetch_live_workers", "Live workers, by backend.", ["backend"])
        for backend in sorted(set(BACKENDS) | set(counts)):
            workers.add_metric([backend], counts[backend])
        return workers

    @staticmethod
    def _runs(per_taxon: dict[int, TaxonRuns]) -> Iterator[GaugeMetricFamily]:
        runs = _gauge("microfetch_runs", "Runs over all taxa: a wanted run's status, or "
                      "excluded.", ["status"])
        taxon_runs = _gauge("microfetch_taxon_runs", "Runs of one taxon, like microfetch_runs.",
                            ["taxonomy_id", "status"])
        wanted = _gauge("microfetch_taxon_wanted_bytes", "Bytes of a taxon's wanted runs.",
                        ["taxonomy_id"])
        fetched = _gauge("microfetch_taxon_fetched_bytes",
                         "Bytes of a taxon's runs fetched and verified.", ["taxonomy_id"])
        total = TaxonRuns()
        for taxon_id, counted in sorted(per_taxon.items()):
            label = str(taxon_id)
            for state in RUN_STATES:  # a taxon's zero states are left out: 2,000 taxa
                if counted.by_state[state]:  # would otherwise make 12,000 series of 0
                    taxon_runs.add_metric([label, state], counted.by_state[state])
            wanted.add_metric([label], counted.wanted_bytes)
            fetched.add_metric([label], counted.fetched_bytes)
            total.by_state.update(counted.by_state)
            total.wanted_bytes += counted.wanted_bytes
            total.fetched_bytes += counted.fetched_bytes
        for state in RUN_STATES:
            runs.add_metric([state], total.by_state[state])
        yield runs
        yield taxon_runs
        yield GaugeMetricFamily("microfetch_wanted_bytes", "Bytes of wanted runs, all taxa.",
                                value=total.wanted_bytes)
        yield GaugeMetricFamily("microfetch_fetched_bytes",
                                "Bytes of runs fetched and verified, all taxa.",
                                value=total.fetched_bytes)
        yield wanted
        yield fetched
