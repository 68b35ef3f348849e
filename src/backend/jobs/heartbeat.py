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

from backend.collection.collect import Collector
from backend.compute import make_backend
from backend.compute.base import ComputeBackend
from backend.errors import OperationError
from backend.jobs.alerts import send_alerts
from backend.jobs.dispatch import Dispatcher
from backend.jobs.due import pick_due
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.add_taxa import Lookup
from backend.state.circuit import (
    Circuit,
    checks_paused,
    claim_check,
    ena_answered,
    ena_failed,
    file_host_paused,
)
from backend.state.circuit import State as CircuitState
from backend.state.registry import Registry, Stage, Status
from backend.state.transitions import lift_old_outage_parks, parked, warned
from backend.state.turns import taxon_failed, taxon_passed, waits
from backend.state.workers import WorkerStore
from backend.timeutil import format_time, utc_now

ACTOR = "daemon"
#: How long the record of a destroyed worker is kept (the pages show recent workers).
KEEP_DESTROYED = timedelta(days=7)
#: How `ena.EnaError` ends a transient failure's message; the heartbeat says when instead.
RETRY_CLAUSE = "; it is tried again"
#: A probe of ENA's portal: short, and never retried (the check before it already was).
PROBE_TIMEOUT_SECONDS = 10.0


def portal_answers(settings: Settings) -> bool:
    """Does ENA's portal answer at all? A refusal (4xx) is an answer; silence or 5xx is not."""
    from backend.ena.client import EnaClient, EnaError

    probe = settings.with_overrides(
        ena_retries=0, ena_timeout=min(settings.ena_timeout, PROBE_TIMEOUT_SECONDS))
    try:
        EnaClient(probe).count("tax_eq(1)")
    except EnaError as exc:
        return exc.permanent
    return True


@dataclass
class Jobs:
    """What the jobs share; ``stop`` asks running steps to finish early and safely."""

    settings: Settings
    backend: ComputeBackend
    registry: Registry
    store: WorkerStore
    stop: threading.Event = field(default_factory=threading.Event)
    lookup: Lookup | None = None  # ENA's taxonomy look-up (tests put a stand-in here)

    @classmethod
    def build(cls, settings: Settings, backend: ComputeBackend | None = None) -> Jobs:
        return cls(settings, backend or make_backend(settings), Registry.from_settings(settings),
                   WorkerStore.of(settings))

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.settings, self.backend, self.registry, self.store)

    # heartbeat ---------------------------------------------------------------------------

    def heartbeat(self, now: datetime | None = None) -> str:
        """Finish interrupted starts, then advance the due taxon by as many stages as it can.

        Checks wait while ENA's circuit is open, new workers while the file host's is; a taxon
        whose last pass failed for a transient cause waits its own backoff while others go.
        """
        now = now or utc_now()
        resumed = self.dispatcher.resume()
        lift_old_outage_parks(self.registry, ACTOR)
        paused = checks_paused(self.settings, now)
        if paused is None:
            self._look_up_names(now)
        capacity = self.dispatcher.free_slots() > 0 and not file_host_paused(self.settings, now)
        row = pick_due(self.registry.load(), now, timedelta(hours=self.settings.recheck_hours),
                       capacity, checks_allowed=paused is None,
                       waiting_until={t: w.next_try for t, w in waits(self.settings).items()})
        if row is None:
            idle = f"resumed {len(resumed)} workers; nothing due" if resumed else "nothing due"
            return f"{idle} ({paused})" if paused else idle
        if row.stage is Stage.CHECK and not claim_check(self.settings, now):
            return "nothing due (another process is trying ENA)"
        try:
            return self._advance(row.taxonomy_id, now)
        except Exception as exc:  # sorted by cause in _failed; the loop goes on
            return self._failed(row.taxonomy_id, exc, now)
        finally:
            self._alert()

    def _look_up_names(self, now: datetime) -> None:
        """Names of taxa added through the web (looked up here, not in the request)."""
        from backend.ena.client import taxonomy_lookup
        from backend.state.names import look_up_names, pending

        if pending(self.settings, now):
            outcome = look_up_names(self.settings, self.registry,
                                    self.lookup or taxonomy_lookup(self.settings), now)
            logger.info("taxonomy names: {}", outcome)

    def _advance(self, taxon_id: int, now: datetime) -> str:
        from backend.jobs import stages  # ENA's parts load pyarrow: only when a taxon is due

        done = []
        stage = self.registry.get(taxon_id).stage
        if stage is Stage.CHECK and not self.stop.is_set():
            failed = self._check(taxon_id, now)
            if failed:
                return f"taxon {taxon_id}: {failed}"
            done.append("checked")
            stage = self.registry.get(taxon_id).stage
        if stage is Stage.FILTER and not self.stop.is_set():
            stages.select(self.settings, self.registry, taxon_id, now)
            done.append("filtered")
            stage = self.registry.get(taxon_id).stage
        if stage is Stage.DISPATCH and not self.stop.is_set():
            report = self.dispatcher.dispatch(taxon_id, now, self.stop.is_set)
            done.append(f"started {len(report.started)} workers"
                        + (f" ({report.waiting})" if report.waiting else ""))
        taxon_passed(self.settings, taxon_id)
        return f"taxon {taxon_id}: " + (", ".join(done) or "nothing to do")

    def _check(self, taxon_id: int, now: datetime) -> str:
        """Check the taxon against ENA; on a transient failure, the one line saying what next.

        ENA not answering pauses every taxon's check (the circuit), not this taxon's alone;
        ENA answering others but failing this taxon makes this taxon wait its turn.
        """
        from backend.jobs import stages

        try:
            stages.check(self.settings, self.registry, taxon_id, now)
        except OperationError as exc:
            if exc.permanent:
                raise
            cause = str(exc).split(RETRY_CLAUSE)[0]  # the next try is told here, not there
            if not portal_answers(self.settings):
                circuit = ena_failed(self.settings, cause, now)
                logger.warning("ENA unreachable ({}); checks of every taxon paused until {} "
                               "(failed try {})", cause, format_time(circuit.next_try),
                               circuit.failures)
                return f"ENA unreachable; checks paused until {format_time(circuit.next_try)}"
            self._back_to(ena_answered(self.settings, now), now)
            wait = taxon_failed(self.settings, taxon_id, cause, now)
            taxon_log(taxon_id).warning("check failed ({}); next try at {}", cause,
                                        format_time(wait.next_try))
            return f"check failed; next try at {format_time(wait.next_try)}"
        self._back_to(ena_answered(self.settings, now), now)
        return ""

    def _back_to(self, before: Circuit, now: datetime) -> None:
        if before.state is not CircuitState.CLOSED:
            logger.info("ENA answers again after an outage since {}; checks resume",
                        format_time(before.since))

    def _failed(self, taxon_id: int, exc: Exception, now: datetime) -> str:
        """A stage raised: back off for a transient cause, park for one a person must fix."""
        if isinstance(exc, OperationError) and not exc.permanent:
            wait = taxon_failed(self.settings, taxon_id, str(exc), now)
            taxon_log(taxon_id).warning("{} ({}); next try at {}", type(exc).__name__, exc,
                                        format_time(wait.next_try))
            warned(self.registry, taxon_id, ACTOR, keep_error=True)
            return f"taxon {taxon_id}: {exc}; next try at {format_time(wait.next_try)}"
        if isinstance(exc, OperationError):
            what, todo = str(exc), None  # the default: fix it, then clear the park
        else:
            # A surprise: the traceback goes to the main log only, without variable values;
            # the taxon's own log (shown on its public page) gets the one line.
            logger.opt(exception=exc).error("taxon {}: unexpected error in the heartbeat: {}",
                                            taxon_id, exc)
            what = f"unexpected error in the heartbeat: {type(exc).__name__}: {exc}"
            todo = f"see the main log, then `microfetch attention clear {taxon_id}`"
        # A reason the stage already gave is kept as it is.
        reason = parked(self.registry, taxon_id, ACTOR, what, todo,
                        status=Status.ERROR).reason or what  # or removed meanwhile
        taxon_log(taxon_id).error("parked: {}", reason)
        return f"taxon {taxon_id}: parked: {reason}"

    # collector and reconciler -------------------------------------------------------------

    def collect(self, now: datetime | None = None) -> str:
        collector = Collector(self.settings, self.backend, self.registry, self.store)
        report = collector.collect(now=now or utc_now())
        self._alert()
        return (f"collected {len(report.collected)} workers ({report.runs_fetched} runs), "
                f"{len(report.lost)} lost, {len(report.held)} held, {len(report.errors)} errors")

    def reconcile(self, now: datetime | None = None) -> str:
        from backend.jobs.reconcile import reconcile

        now = now or utc_now()
        report = reconcile(self.settings, self.backend, self.store, self.registry, now)
        # Destroyed workers' records are kept a while for the pages, then forgotten.
        pruned = self.store.prune(KEEP_DESTROYED, now)
        self._alert()
        return str(report) + (f", {pruned} old worker records pruned" if pruned else "")

    def _alert(self) -> None:
        state = Path(self.settings.data_dir) / "alerts_sent.json"
        for taxon_id in send_alerts(self.registry, state, self.settings.alert_webhook):
            logger.info("alert sent for taxon {}", taxon_id)
