"""Taxon transitions: the one writer of a taxon's ``stage``, ``last_run_status``,
``needs_attention`` and ``droplet_ips``.

Every change of those four fields is one of the named transitions below, each a single registry
transaction with the actor that made it (so the history says who moved a taxon, and how):

- :func:`checking` / :func:`checked`: a check of ENA starts (stage ``check``, ``in progress``)
  and ends (``last_checked``, stage ``filter``);
- :func:`selected`, :func:`dispatched`, :func:`settled`: after the filter, a dispatch, a
  collection or a closed worker, stage, status and addresses are derived from the runs and the
  live workers (one rule, :func:`settled`);
- :func:`ready`: a worker said it finished (``in progress`` becomes ``ready``);
- :func:`warned`: a pass went wrong in a way that fixes itself (status ``warning``);
- :func:`parked` / :func:`cleared`: a person must act (``needs_attention``), in one reason
  format (:func:`park_reason`: what happened; what to do), and released again;
- :func:`lift_old_outage_parks`: parks an older release made for ENA outages are lifted;
- :func:`runs_released` / :func:`worker_runs_released`: a worker's runs go back to pending by
  the one attempt rule (:func:`backend.state.attempts.release`);
- :func:`retried`: failed runs back to pending, then the taxon settles.

``tests/state/test_transitions.py`` fails when any other module assigns one of the four fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from backend.errors import UsageError
from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.attempts import Cause, release
from backend.state.exports import refresh_exports
from backend.state.registry import Registry, Stage, Status
from backend.state.workers import Phase, WorkerRecord, WorkerStore

#: The four fields only this module writes.
FIELDS = ("stage", "last_run_status", "needs_attention", "droplet_ips")
#: How an older release worded the park it made on a third failed check (lifted on sight).
CHECK_PARK_PREFIX = "ENA failed "
#: The default second half of a park's reason.
CLEAR = "once that is fixed, `microfetch attention clear {taxon_id}`"


# Checks --------------------------------------------------------------------------------------

def checking(registry: Registry, taxon_id: int, actor: str) -> None:
    """A check of ENA starts: stage ``check``, status ``in progress``."""
    registry.update(taxon_id, actor, last_run_status=Status.IN_PROGRESS, stage=Stage.CHECK)


def checked(registry: Registry, taxon_id: int, now: datetime, warnings: bool,
            actor: str) -> None:
    """A check of ENA stored its answer: the filter is next."""
    registry.update(taxon_id, actor, last_checked=now, stage=Stage.FILTER,
                    generated_warning=warnings)


# Settling: stage, status and addresses derived from the runs and the live workers -------------

def settled(settings: Any, registry: Registry, store: WorkerStore, taxon_id: int,
            actor: str = "collector") -> None:
    """Derive a taxon's stage, status and addresses from its runs and live workers.

    Live workers: ``wait`` (``ready`` when one holds finished data, else ``in progress``);
    pending runs and no worker: ``dispatch``; nothing left: ``check``, ``complete``. A parked
    taxon keeps its status (the park says why). Completing refreshes the exports.
    """
    accessions = AccessionList.of(settings, taxon_id)
    pending = accessions.counts()["pending"]["runs"] > 0
    live = [r for r in store.live() if r.taxon_id == taxon_id]
    with registry.transaction(actor) as table:
        row = table.get(taxon_id)
        if row is None:
            return
        row.droplet_ips = tuple(r.address for r in live if r.address)
        if live:
            row.stage = Stage.WAIT
            holding = any(r.phase in (Phase.DONE, Phase.COLLECTING) for r in live)
            status = Status.READY if holding else Status.IN_PROGRESS
        elif pending:
            row.stage, status = Stage.DISPATCH, Status.IN_PROGRESS
        else:
            row.stage, status = Stage.CHECK, Status.COMPLETE
        completes = status is Status.COMPLETE and row.last_run_status is not Status.COMPLETE
        if not row.needs_attention:
            row.last_run_status = status
    refresh_exports(settings, taxon_id, force=completes)


def selected(settings: Any, registry: Registry, taxon_id: int, actor: str = "filter") -> None:
    """The filter decided the runs: settle (``dispatch`` when runs are pending)."""
    settled(settings, registry, WorkerStore.of(settings), taxon_id, actor)


def dispatched(settings: Any, registry: Registry, store: WorkerStore, taxon_id: int,
               actor: str = "dispatcher") -> None:
    """Workers were started (or none were needed): settle (``wait`` while workers live)."""
    settled(settings, registry, store, taxon_id, actor)


def ready(registry: Registry, taxon_id: int, actor: str) -> None:
    """A worker said it finished: ``in progress`` becomes ``ready`` (to be collected)."""
    with registry.transaction(actor) as table:
        row = table.get(taxon_id)
        if row is not None and row.last_run_status is Status.IN_PROGRESS:
            row.last_run_status = Status.READY


# Warnings and parks ---------------------------------------------------------------------------

def warned(registry: Registry, taxon_id: int, actor: str, *, keep_error: bool = False) -> None:
    """A pass went wrong in a way that fixes itself: status ``warning``, ``generated_warning``.

    ``keep_error`` leaves a status of ``error`` as it is (a transient failure after a park).
    """
    with registry.transaction(actor) as table:
        row = table.get(taxon_id)
        if row is None or (keep_error and row.last_run_status is Status.ERROR):
            return
        row.last_run_status, row.generated_warning = Status.WARNING, True


def park_reason(taxon_id: int, what: str, todo: str | None = None) -> str:
    """The one format of a park's reason: what happened, then what a person does about it
    (by default: fix it, then clear the park). Whitespace is folded to single spaces."""
    what = " ".join(what.split())
    todo = CLEAR.format(taxon_id=taxon_id) if todo is None else " ".join(todo.split())
    return f"{what}; {todo}" if todo else what


class Parked(NamedTuple):
    """The reason in force after :func:`parked`, and whether this call set it."""

    reason: str
    new: bool


def parked(registry: Registry, taxon_id: int, actor: str, what: str, todo: str | None = None,
           *, status: Status | None = None, replace: bool = False,
           must_exist: bool = False) -> Parked:
    """Park a taxon for a person: the daemon leaves it alone until :func:`cleared`.

    The reason is :func:`park_reason` of ``what`` and ``todo``. The first reason stays unless
    ``replace`` (a person parking, or a collection a person asked for). ``status`` (``error``
    for a stage that failed, ``warning`` for a start that failed) is set with
    ``generated_warning``. A taxon removed meanwhile is left alone unless ``must_exist``.
    """
    reason = park_reason(taxon_id, what, todo)
    if not reason:
        raise UsageError("the reason is empty; say why the taxon is parked, e.g. 'disk full'")
    with registry.transaction(actor) as table:
        row = table.row(taxon_id) if must_exist else table.get(taxon_id)
        if row is None:
            return Parked("", False)
        new = replace or not row.needs_attention
        if new:
            row.needs_attention = reason
        if status is not None:
            row.last_run_status, row.generated_warning = status, True
        return Parked(row.needs_attention, new)


def cleared(registry: Registry, taxon_id: int, actor: str) -> str:
    """Release a parked taxon; returns what ``needs_attention`` said (empty when not parked)."""
    with registry.transaction(actor) as table:
        row = table.row(taxon_id)
        was, row.needs_attention = row.needs_attention, ""
    return was


def lift_old_outage_parks(registry: Registry, actor: str) -> list[int]:
    """Lift parks an older release made for three failed checks in a row, whatever their
    cause: an outage must cost nothing, and a parked taxon would never be tried again."""
    parked_ids = [row.taxonomy_id for row in registry.load()
                  if row.needs_attention.startswith(CHECK_PARK_PREFIX)]
    if not parked_ids:
        return []
    lifted = []
    with registry.transaction(actor) as table:
        for taxon_id in parked_ids:
            row = table.get(taxon_id)
            if row is not None and row.needs_attention.startswith(CHECK_PARK_PREFIX):
                row.needs_attention, row.last_run_status = "", Status.WARNING
                lifted.append(taxon_id)
    return lifted


# Runs ------------------------------------------------------------------------------------------

def runs_released(runs: Mapping[str, Run], worker: str,
                  given_back: Iterable[tuple[str, Cause, str]], max_attempts: int) -> int:
    """Give runs a worker held back to pending, inside an open :meth:`AccessionList.edit`.

    ``given_back`` is (accession, cause, error). Only a run still assigned to this worker is
    released, so a run is never given back twice; the attempt rule decides what counts.
    """
    count = 0
    for accession, cause, error in given_back:
        run = runs.get(accession)
        if run is not None and run.worker == worker and run.status is RunStatus.ASSIGNED:
            release(run, cause, error, max_attempts)
            count += 1
    return count


def worker_runs_released(settings: Any, record: WorkerRecord, cause: Cause,
                         error: str) -> int:
    """All of a worker's runs still assigned to it back to pending, for one cause."""
    with AccessionList.of(settings, record.taxon_id).edit(record.runs) as runs:
        return runs_released(runs, record.name, ((a, cause, error) for a in record.runs),
                             settings.max_attempts)


def retried(settings: Any, taxon_id: int, actor: str | None = None) -> int:
    """Runs that failed or were excluded for failed attempts go back to pending, with fresh
    attempts; then the taxon settles. Returns how many."""
    registry = Registry.from_settings(settings)
    registry.get(taxon_id)  # an unknown taxon is an error, not a silent no-op
    count = 0
    with AccessionList.of(settings, taxon_id).edit() as runs:
        for run in runs.values():
            gave_up = run.exclusion_code == Exclusion.FAILED_ATTEMPTS.value
            tried = not run.excluded and run.status is RunStatus.PENDING and run.attempts > 0
            if gave_up or tried:
                run.include()
                run.status, run.attempts = RunStatus.PENDING, 0
                count += 1
    if count:
        settled(settings, registry, WorkerStore.of(settings), taxon_id, actor or "retry")
    return count
