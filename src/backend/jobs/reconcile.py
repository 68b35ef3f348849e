"""Reconciliation: the backend's live workers against the worker records.

- a live worker with no record (or a closed one), older than the grace period, is destroyed;
- a second live worker of a record that already names its own (a droplet made twice after an
  unclear answer) is destroyed as a duplicate, at once: it can never be used, only billed;
- a record whose worker vanished is closed and its assigned runs go back to pending;
- a worker older than the age limit puts its taxon in ``needs_attention``.
Written once for every backend; the orphan grace period protects a worker being started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from filelock import FileLock, Timeout

from backend.compute.base import ComputeBackend, LiveWorker
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.attempts import Cause
from backend.state.registry import Registry
from backend.state.statefile import lock_path
from backend.state.transitions import parked, settled, worker_runs_released
from backend.state.workers import Phase, WorkerRecord, WorkerStore, parse_worker_name
from backend.timeutil import format_time, utc_now

ACTOR = "reconciler"


@dataclass
class ReconcileReport:
    destroyed: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.destroyed)} orphans destroyed, {len(self.closed)} vanished workers "
                f"closed, {len(self.flagged)} old workers flagged")


def reconcile(settings: Settings, backend: ComputeBackend, store: WorkerStore,
              registry: Registry, now: datetime, grace: float | None = None) -> ReconcileReport:
    """One pass; ``grace`` overrides MICROFETCH_ORPHAN_GRACE_SECONDS (0 for `workers reap`)."""
    report = ReconcileReport()
    workers = backend.list_live()
    live = {worker.name for worker in workers}
    records = {r.name: r for r in store.all() if r.backend == backend.name}
    grace = settings.orphan_grace_seconds if grace is None else grace
    for worker in workers:
        record = records.get(worker.name)
        if (record is None or record.phase is Phase.DESTROYED) and \
                _age(worker.created_at, now) >= grace:
            _destroy_orphan(backend, worker, record)
            report.destroyed.append(worker.name)
        elif record is not None and _duplicate(worker, record):
            _destroy_duplicate(backend, worker, record)
            report.destroyed.append(worker.name)
    for name, record in records.items():
        if record.phase in (Phase.CLAIMED, Phase.DESTROYED):
            continue
        if name not in live:
            if _close(settings, store, registry, record):
                report.closed.append(name)
        elif _too_old(settings, registry, record, now) or _stuck(settings, registry, record,
                                                                 now):
            report.flagged.append(name)
    return report


def _stuck(settings: Settings, registry: Registry, record: WorkerRecord, now: datetime) -> bool:
    """A worker too long in a waiting phase: say so, with what to do, in needs_attention."""
    limits = {
        Phase.STARTING: (settings.start_deadline_minutes * 60, "starting",
                         "check that the host boots and the runner starts (its "
                         "run_chunk.out), or raise MICROFETCH_START_DEADLINE_MINUTES"),
        Phase.COLLECTING: (settings.collect_deadline_hours * 3600, "collecting",
                           "check the network to the worker and free disk at home, or raise "
                           "MICROFETCH_COLLECT_DEADLINE_HOURS"),
        Phase.DONE: (settings.collect_deadline_hours * 3600, "waiting to be collected",
                     "check `microfetch collect` and the daemon's log"),
    }
    if record.phase not in limits or record.phase_since is None:
        return False
    seconds, doing, hint = limits[record.phase]
    if _age(record.phase_since, now) < seconds:
        return False
    return _flag(registry, record.taxon_id,
                 f"worker {record.name} has been {doing} since {format_time(record.phase_since)}",
                 f"{hint}, then `microfetch attention clear {record.taxon_id}`, or "
                 f"`microfetch workers destroy {record.name}` to give its runs back")


def _flag(registry: Registry, taxon_id: int, what: str, todo: str) -> bool:
    """Park a taxon with this reason unless it is parked already (the first reason stays)."""
    park = parked(registry, taxon_id, ACTOR, what, todo)
    if park.new:
        taxon_log(taxon_id).warning(park.reason)
    return park.new


def _age(created_at: datetime | None, now: datetime) -> float:
    """Seconds since creation; never negative (``now`` is truncated to the second)."""
    return max(0.0, (now - created_at).total_seconds()) if created_at else float("inf")


def _destroy_orphan(backend: ComputeBackend, worker: LiveWorker,
                    record: WorkerRecord | None) -> None:
    if record is None:
        taxon, chunk = parse_worker_name(worker.name)
        record = WorkerRecord(name=worker.name, backend=backend.name, taxon_id=taxon,
                              chunk=chunk, runs=[], bytes=0, token_sha256="",
                              created_at=worker.created_at or utc_now(), address=worker.address)
        if worker.backend_id.isdigit():
            record.droplet_id = int(worker.backend_id)
    backend.destroy(record)
    taxon_log(record.taxon_id).warning("destroyed orphan worker {} (no record of it)",
                                       worker.name)


def _duplicate(worker: LiveWorker, record: WorkerRecord) -> bool:
    """The record names another droplet than this one (a record with no id yet adopts)."""
    return record.phase is not Phase.DESTROYED and record.droplet_id is not None and \
        worker.backend_id.isdigit() and int(worker.backend_id) != record.droplet_id


def _destroy_duplicate(backend: ComputeBackend, worker: LiveWorker,
                       record: WorkerRecord) -> None:
    """Destroy only the duplicate: a copy of the record that names it, not the worker's own."""
    duplicate = WorkerRecord.from_json(record.to_json())
    duplicate.droplet_id = int(worker.backend_id)
    backend.destroy(duplicate)
    taxon_log(record.taxon_id).warning("destroyed droplet {}: a duplicate of worker {}, whose "
                                       "droplet is {}", worker.backend_id, record.name,
                                       record.droplet_id)


def _close(settings: Settings, store: WorkerStore, registry: Registry,
           record: WorkerRecord) -> bool:
    """Close the record of a worker that no longer exists; its runs go back to pending."""
    return close_record(settings, store, registry, record,
                        "the worker vanished before it was collected")


def close_record(settings: Settings, store: WorkerStore, registry: Registry,
                 record: WorkerRecord, reason: str, cause: Cause = Cause.NOT_TRIED) -> bool:
    """Mark a worker destroyed and give its assigned runs back (by the attempt rule, which
    counts nothing for a vanished worker or one a person destroyed); False if already closed."""
    collecting = store.folder / f"{record.name}.collect"
    collecting.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(collecting)), timeout=0.5)
    try:
        lock.acquire()
    except Timeout:
        return False  # a collection holds it: it is not vanished, it is being collected
    try:  # any other failure is a failure, not a collection: it propagates
        current = store.get(record.name)
        if current is None or current.phase is Phase.DESTROYED:
            return False
        worker_runs_released(settings, record, cause, reason)
        with store.edit(record.name) as edited:
            edited.phase, edited.last_error = Phase.DESTROYED, reason
    finally:
        lock.release()
    settled(settings, registry, store, record.taxon_id, ACTOR)
    taxon_log(record.taxon_id).warning("worker {}: {}; its runs are pending again",
                                       record.name, reason)
    return True


def _too_old(settings: Settings, registry: Registry, record: WorkerRecord,
             now: datetime) -> bool:
    limit = timedelta(hours=settings.worker_max_age_hours)
    if now - record.created_at < limit:
        return False
    return _flag(registry, record.taxon_id,
                 f"worker {record.name} is older than {settings.worker_max_age_hours:g} h",
                 f"check it, then `microfetch workers destroy {record.name}` or raise "
                 "MICROFETCH_WORKER_MAX_AGE_HOURS")
