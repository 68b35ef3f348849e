"""Dispatch: chunk a taxon's pending runs and start workers within the caps.

Intent is recorded before every side effect: the worker folder (with its token) is written,
then the worker record (phase ``claimed``), then the runs are marked ``assigned``, and only
then is the backend asked to start the worker. After a crash, :meth:`Dispatcher.resume`
finishes what a claimed record says, so no worker is started twice and none is forgotten.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from filelock import FileLock, Timeout

from backend.compute.base import Chunk, ChunkRun, ComputeBackend, prepare_folder, worker_options
from backend.errors import OperationError
from backend.jobs.chunking import Item, plan_chunks
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.attempts import Cause, another_round
from backend.state.circuit import dispatch_paused
from backend.state.registry import Registry, Status
from backend.state.transitions import dispatched, parked, warned, worker_runs_released
from backend.state.workers import (
    Phase,
    WorkerRecord,
    WorkerStore,
    new_token,
    token_hash,
    worker_name,
)
from backend.timeutil import utc_now

ACTOR = "dispatcher"


class _Taken(Exception):
    """Inside a claim: the plan no longer holds (raised to roll the claim back)."""


@dataclass
class DispatchReport:
    started: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    waiting: str = ""
    bytes: int = 0


def chunk_run(run: Run, scheme: str) -> ChunkRun:
    """Full URLs for a worker, built at home from ENA's scheme-less paths."""
    return ChunkRun(run.accession, tuple(f"{scheme}://{path}" for path in run.fastq_files),
                    run.fastq_md5, run.fastq_bytes)


@dataclass
class Dispatcher:
    settings: Settings
    backend: ComputeBackend
    registry: Registry
    store: WorkerStore

    def free_slots(self) -> int:
        """Workers that may start now: the global cap, then the backend's own limits."""
        live = self.store.live()
        return max(0, min(self.settings.max_workers - len(live), self.backend.slots(live)))

    def _planning_window(self, slots: int) -> int:
        """How many pending runs to plan from: enough to fill every free slot, not a whole
        million-run list."""
        return max(1, slots) * self.settings.chunk_max_runs * 4

    def outbox(self, name: str) -> Path:
        return Path(self.settings.data_dir) / "outbox" / name

    def dispatch(self, taxon_id: int, now: datetime,
                 stopping: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Start as many workers for this taxon's pending runs as the caps allow."""
        report = DispatchReport()
        paused = dispatch_paused(self.settings, now)
        if paused:  # the file host is down: a worker now would only wait and bill
            report.waiting = paused
            return report
        log = taxon_log(taxon_id)
        accessions = AccessionList.of(self.settings, taxon_id)
        again = another_round(accessions.db, taxon_id, now,
                              timedelta(hours=self.settings.retry_failed_after_hours),
                              self.settings.retry_failed_rounds)
        if again:
            log.info("{} runs given up on get another round after their cool-off", again)
        slots = self.free_slots()
        pending = accessions.pending(self._planning_window(slots))
        capacity = int(self.backend.disk_bytes() * (1 - self.settings.disk_headroom))
        plan = plan_chunks([Item(r.accession, r.total_bytes) for r in pending], capacity,
                           self.settings.chunk_max_runs)
        report.too_large = self._exclude_too_large(accessions, plan.too_large, capacity)
        chunks = plan.chunks[:slots]
        if not plan.chunks:
            dispatched(self.settings, self.registry, self.store, taxon_id, ACTOR)
            return report
        if not chunks:
            report.waiting = "no free worker: waiting for capacity"
            return report
        report.bytes = sum(i.size for chunk in chunks for i in chunk)
        if not self._home_has_room(taxon_id, report.bytes):
            report.waiting = "not enough free disk at home"
            return report
        estimate = self.backend.estimate([sum(i.size for i in c) for c in chunks])
        log.info("dispatch estimate: {}", estimate["text"])
        self.registry.note(taxon_id, "cost_estimate", estimate, ACTOR)
        runs = {r.accession: r for r in pending}
        for items in chunks:
            if stopping():
                break
            claim = self._claim(taxon_id, [runs[i.key] for i in items])
            if claim is None:
                report.waiting = "another dispatcher took these runs or the last free slot"
                break
            name, starting = claim
            with starting:
                if self._start(name):
                    report.started.append(name)
        dispatched(self.settings, self.registry, self.store, taxon_id, ACTOR)
        return report

    def _exclude_too_large(self, accessions: AccessionList, items: Sequence[Item],
                           capacity: int) -> list[str]:
        if not items:
            return []
        with accessions.edit(item.key for item in items) as runs:
            for item in items:
                runs[item.key].exclude(
                    Exclusion.TOO_LARGE,
                    f"{item.size} bytes is more than a worker holds ({capacity} bytes)",
                )
        return [item.key for item in items]

    def _home_has_room(self, taxon_id: int, new_bytes: int) -> bool:
        """Free disk at home must hold what is in flight and what is dispatched, plus headroom."""
        data_dir = Path(self.settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        in_flight = sum(r.bytes for r in self.store.live())
        need = int((in_flight + new_bytes) * (1 + self.settings.disk_headroom))
        free = shutil.disk_usage(data_dir).free
        if free >= need:
            return True
        reason = (f"home disk {data_dir} has {free / 1e9:.1f} GB free, dispatch needs "
                  f"{need / 1e9:.1f} GB; free space or move MICROFETCH_DATA_DIR")
        warned(self.registry, taxon_id, ACTOR)
        taxon_log(taxon_id).warning(reason)
        return False

    def _starting(self, name: str) -> FileLock:
        """Held by the process starting a worker, from its claim until it runs. The operating
        system releases it when that process dies, so `resume` can tell a crashed start from
        one another process (an overlapping `tick`) is still making."""
        folder = Path(self.settings.data_dir) / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f"{name}.start"), timeout=0)

    def _claim(self, taxon_id: int, runs: Sequence[Run]) -> tuple[str, FileLock] | None:
        """Write the record and the assignments in one transaction, then the folder.

        The transaction re-checks what the plan assumed: the cap on live workers still has room
        and every run is still pending. Another process that got there first makes this claim
        give up (None) rather than share runs or exceed the cap. The start lock is taken before
        the claim commits and returned held.
        """
        token = new_token()
        starting: FileLock | None = None
        try:
            with self.store.db.write() as con:
                if self.store.live_count(con) >= self.settings.max_workers:
                    raise _Taken
                chunk = self.store.next_chunk(taxon_id, con)
                name = worker_name(taxon_id, chunk)
                starting = self._starting(name)
                starting.acquire()
                marks = ", ".join("?" * len(runs))
                # `+category`: look the runs up by accession, not by scanning every pending one
                claimed = con.execute(
                    f"UPDATE runs SET status = 'assigned', category = 'assigned', worker = ? "
                    f"WHERE taxon = ? AND accession IN ({marks}) AND +category = 'pending'",
                    (name, taxon_id, *(r.accession for r in runs))).rowcount
                if claimed != len(runs):
                    raise _Taken  # rolls the whole claim back
                self.store.save(WorkerRecord(
                    name=name, backend=self.backend.name, taxon_id=taxon_id, chunk=chunk,
                    runs=[r.accession for r in runs], bytes=sum(r.total_bytes for r in runs),
                    token_sha256=token_hash(token), created_at=utc_now(),
                    extra={"products": self.settings.worker_products},
                ))
        except _Taken:
            if starting is not None:
                starting.release()
            return None
        assert starting is not None
        self._write_folder(name, taxon_id, chunk, runs, token)
        return name, starting

    def _write_folder(self, name: str, taxon_id: int, chunk: int, runs: Sequence[Run],
                      token: str) -> Path:
        spec = Chunk(taxon_id, chunk, tuple(chunk_run(r, self.settings.fastq_scheme)
                                            for r in runs))
        assert self.settings.pipeline_dir is not None
        return prepare_folder(self.outbox(name), spec, token, self.settings.callback_url,
                              self.settings.pipeline_dir, worker_options(self.settings))

    def _start(self, name: str) -> bool:
        record = self.store.get(name)
        assert record is not None
        log = taxon_log(record.taxon_id)
        try:
            record = self.backend.start(record, self.outbox(name), self.store.save)
        except OperationError as exc:
            self._abandon(record, exc)
            return False
        with AccessionList.of(self.settings, record.taxon_id).edit(record.runs) as rows:
            for run in rows.values():
                run.droplet_ip = record.address
        shutil.rmtree(self.outbox(name), ignore_errors=True)
        log.info("started worker {} on {} ({} runs, {} bytes)", name, record.address or
                 self.backend.name, len(record.runs), record.bytes)
        return True

    def _abandon(self, record: WorkerRecord, exc: OperationError) -> None:
        """A start that failed: destroy what may exist, give the runs back, say why."""
        log = taxon_log(record.taxon_id)
        log.error("starting worker {} failed: {}", record.name, exc)
        try:
            self.backend.destroy(record)
        except OperationError as again:  # the reconciler finds it by name later
            log.error("destroying {} failed too: {}", record.name, again)
        with self.store.edit(record.name) as current:
            current.phase, current.last_error = Phase.DESTROYED, str(exc)
        worker_runs_released(self.settings, record, Cause.NOT_TRIED,
                             f"starting worker {record.name} failed")
        if exc.permanent:  # a person must fix it (a key, a quota): park with the reason
            parked(self.registry, record.taxon_id, ACTOR, f"starting a worker failed: {exc}",
                   status=Status.WARNING)
        else:
            warned(self.registry, record.taxon_id, ACTOR)
        shutil.rmtree(self.outbox(record.name), ignore_errors=True)

    def resume(self) -> list[str]:
        """Finish starting workers whose record was claimed before a crash."""
        resumed = []
        for record in self.store.live():
            if record.phase not in (Phase.CLAIMED, Phase.STARTING):
                continue
            if record.backend != self.backend.name:
                continue
            try:
                with self._starting(record.name):
                    current = self.store.get(record.name)  # finished while we looked?
                    if current is None or current.phase not in (Phase.CLAIMED, Phase.STARTING):
                        continue
                    self._reassign(current)
                    if self._start(current.name):
                        resumed.append(current.name)
            except Timeout:
                continue  # a live process is starting it right now
            dispatched(self.settings, self.registry, self.store, record.taxon_id, ACTOR)
        return resumed

    def _reassign(self, record: WorkerRecord) -> None:
        """Make the claim whole again: runs assigned, the folder and token present."""
        accessions = AccessionList.of(self.settings, record.taxon_id)
        with accessions.edit(record.runs) as rows:
            for run in rows.values():
                run.status, run.worker = RunStatus.ASSIGNED, record.name
        if not (self.outbox(record.name) / "token").exists():
            token = new_token()
            found = accessions.get(record.runs)
            runs = [found[a] for a in record.runs if a in found]
            self._write_folder(record.name, record.taxon_id, record.chunk, runs, token)
            with self.store.edit(record.name) as current:
                current.token_sha256 = token_hash(token)
