"""The daemon's jobs as plain steps: heartbeat, collector, reconciler.

Each step does one unit of work, takes ``now``, and can be called from a test, from
`microfetch tick`, or from the scheduler. A failing taxon is logged and marked; the step
returns and the scheduler lives on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from loguru import logger

from backend.alerts import send_alerts
from backend.collect import Collector
from backend.compute import make_backend
from backend.compute.base import ComputeBackend
from backend.dispatch import Dispatcher
from backend.due import pick_due
from backend.errors import OperationError
from backend.logs import taxon_log
from backend.registry import Registry, Stage, Status
from backend.settings import Settings
from backend.timeutil import utc_now
from backend.workers import WorkerStore

ACTOR = "daemon"


@dataclass
class Jobs:
    """What the jobs share; ``stop`` asks running steps to finish early and safely."""

    settings: Settings
    backend: ComputeBackend
    registry: Registry
    store: WorkerStore
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, settings: Settings, backend: ComputeBackend | None = None) -> Jobs:
        return cls(settings, backend or make_backend(settings), Registry.from_settings(settings),
                   WorkerStore.of(settings))

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.settings, self.backend, self.registry, self.store)

    # heartbeat ---------------------------------------------------------------------------

    def heartbeat(self, now: datetime | None = None) -> str:
        """Finish interrupted starts, then advance the due taxon by as many stages as it can."""
        now = now or utc_now()
        resumed = self.dispatcher.resume()
        recheck = timedelta(hours=self.settings.recheck_hours)
        row = pick_due(self.registry.load(), now, recheck, self.dispatcher.free_slots() > 0)
        if row is None:
            return f"resumed {len(resumed)} workers; nothing due" if resumed else "nothing due"
        try:
            return self._advance(row.taxonomy_id, now)
        except Exception as exc:  # a bug or an unforeseen state: park the taxon, keep going
            self._park(row.taxonomy_id, exc)
            return f"taxon {row.taxonomy_id}: error: {exc}"
        finally:
            self._alert()

    def _advance(self, taxon_id: int, now: datetime) -> str:
        from backend.fetch_accession_links import check_taxon
        from backend.parse_fetched_data import filter_taxon

        done = []
        stage = self.registry.get(taxon_id).stage
        if stage is Stage.CHECK and not self.stop.is_set():
            check_taxon(self.settings, self.registry, taxon_id, now)
            done.append("checked")
            stage = self.registry.get(taxon_id).stage
        if stage is Stage.FILTER and not self.stop.is_set():
            filter_taxon(self.settings, self.registry, taxon_id, now)
            done.append("filtered")
            stage = self.registry.get(taxon_id).stage
        if stage is Stage.DISPATCH and not self.stop.is_set():
            report = self.dispatcher.dispatch(taxon_id, now, self.stop.is_set)
            done.append(f"started {len(report.started)} workers"
                        + (f" ({report.waiting})" if report.waiting else ""))
        return f"taxon {taxon_id}: " + (", ".join(done) or "nothing to do")

    def _park(self, taxon_id: int, exc: Exception) -> None:
        taxon_log(taxon_id).opt(exception=exc).error("heartbeat failed: {}", exc)
        if isinstance(exc, OperationError) and not exc.permanent:
            self.registry.update(taxon_id, ACTOR, last_run_status=Status.WARNING,
                                 generated_warning=True)
            return
        self.registry.update(
            taxon_id, ACTOR, last_run_status=Status.ERROR, generated_warning=True,
            needs_attention=f"unexpected error in the heartbeat: {exc}; see the taxon's log, "
                            "then `microfetch attention clear` to let it run again",
        )

    # collector and reconciler -------------------------------------------------------------

    def collect(self, now: datetime | None = None) -> str:
        collector = Collector(self.settings, self.backend, self.registry, self.store)
        report = collector.collect(now=now or utc_now())
        self._alert()
        return (f"collected {len(report.collected)} workers ({report.runs_fetched} runs), "
                f"{len(report.lost)} lost, {len(report.held)} held, {len(report.errors)} errors")

    def reconcile(self, now: datetime | None = None) -> str:
        from backend.reconcile import reconcile

        report = reconcile(self.settings, self.backend, self.store, self.registry,
                           now or utc_now())
        self._alert()
        return str(report)

    def _alert(self) -> None:
        state = Path(self.settings.data_dir) / "alerts_sent.json"
        for taxon_id in send_alerts(self.registry, state, self.settings.alert_webhook):
            logger.info("alert sent for taxon {}", taxon_id)
