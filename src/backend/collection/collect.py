"""Collection: bring a finished worker's data home, verify it, then destroy the worker.

Written once for every backend. Order matters for crash safety: pull into staging, verify
every file, move verified files into ``genomes/``, mark runs fetched, rewrite the samplesheet,
and only then destroy the worker. A crash anywhere repeats harmless steps on the next pass.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.collection.manifest import BadSummary, Verdict, read_done, verify_worker_output
from backend.compute.base import ComputeBackend, WorkerState
from backend.errors import OperationError
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.accessions import AccessionList, Run, RunStatus
from backend.state.attempts import Cause
from backend.state.circuit import record_file_host
from backend.state.registry import Registry, Status
from backend.state.statefile import locked
from backend.state.transitions import parked, runs_released, settled
from backend.state.workers import Phase, WorkerRecord, WorkerStore
from backend.timeutil import format_time, utc_now

ACTOR = "collector"
#: Backend states of a worker that will not finish: take what it has, give back the rest.
ENDED = (WorkerState.GONE, WorkerState.CRASHED)
#: How long a collection waits for another one working on the same worker.
COLLECT_LOCK_SECONDS = 3600.0


@dataclass
class CollectReport:
    """What one collection pass did, worker by worker."""

    collected: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs_fetched: int = 0
    runs_failed: int = 0
    bytes_fetched: int = 0
    taxa: set[int] = field(default_factory=set)  # of the workers this pass looked at


@dataclass
class Collector:
    settings: Settings
    backend: ComputeBackend
    registry: Registry
    store: WorkerStore

    @classmethod
    def build(cls, settings: Settings, backend: ComputeBackend) -> Collector:
        return cls(settings, backend, Registry.from_settings(settings),
                   WorkerStore.of(settings))

    def collect(self, taxon_id: int | None = None, *, force: bool = False,
                now: datetime | None = None) -> CollectReport:
        """One pass over the live workers (of one taxon); ``force`` also takes parked taxa."""
        report = CollectReport()
        parked = {row.taxonomy_id for row in self.registry.load() if row.needs_attention}
        for record in self.store.live():
            if record.backend != self.backend.name or record.phase is Phase.CLAIMED:
                continue
            if taxon_id is not None and record.taxon_id != taxon_id:
                continue
            if record.taxon_id in parked and not force:
                continue
            report.taxa.add(record.taxon_id)
            try:
                self._collect_one(record.name, report, now or utc_now())
            except OperationError as exc:
                report.errors.append(f"{record.name}: {exc}")
                taxon_log(record.taxon_id).warning("collecting {}: {}", record.name, exc)
        return report

    def _collect_one(self, name: str, report: CollectReport, now: datetime) -> None:
        lock = self.store.folder / f"{name}.collect"
        with locked(lock, timeout=COLLECT_LOCK_SECONDS):
            record = self.store.get(name)  # re-read: another pass may have finished it
            if record is None or record.phase is Phase.DESTROYED:
                return
            state = self.backend.status(record)
            finished = record.phase in (Phase.DONE, Phase.COLLECTING, Phase.HELD)
            if state is WorkerState.DONE or finished or state in ENDED:
                self._bring_home(record, report, now, state)
            elif state is WorkerState.RUNNING and self.settings.collect_while_fetching:
                self._take_finished_runs(record, report, now)

    def _take_finished_runs(self, record: WorkerRecord, report: CollectReport,
                            now: datetime) -> None:
        """While a worker fetches: bring home its verified runs and free its disk of them.

        Only runs the manifest calls verified and home verifies again are taken; failures wait
        for the worker's end, when the attempt rule decides about them.
        """
        staging = Path(self.settings.data_dir) / "staging" / record.name
        self.backend.pull(record, staging, self.settings.rsync_timeout)
        accessions = AccessionList.of(self.settings, record.taxon_id)
        waiting = {a: run for a, run in accessions.get(record.runs).items()
                   if run.status is RunStatus.ASSIGNED and run.worker == record.name}
        verdict = verify_worker_output(staging, list(waiting), waiting,
                                       finished=False,
                                       products=record.extra.get("products", "reads"))
        if verdict.problems or not verdict.ok:
            return  # problems are judged with the whole chunk, at its end
        taken = Verdict(ok=verdict.ok, bytes_ok=verdict.bytes_ok,
                        assemblies=verdict.assemblies)
        self._move_home(record, taken)
        self._record_runs(accessions, record, taken, now)
        self.backend.remove_runs(record, list(taken.ok))
        for run in taken.ok:
            shutil.rmtree(staging / run, ignore_errors=True)
        report.runs_fetched += len(taken.ok)
        report.bytes_fetched += taken.bytes_ok
        taxon_log(record.taxon_id).info("took {} finished runs of {} home while it fetches",
                                        len(taken.ok), record.name)

    def _bring_home(self, record: WorkerRecord, report: CollectReport, now: datetime,
                    state: WorkerState) -> None:
        """Pull what the worker has, keep every verified run, give back the rest, destroy it.

        Also for a worker that stopped before it finished: its verified runs are not thrown
        away, and only the runs it tried and failed cost an attempt.
        """
        staging = Path(self.settings.data_dir) / "staging" / record.name
        if record.phase is Phase.HELD:
            shutil.rmtree(staging, ignore_errors=True)  # a person asked again: pull afresh
        self._set_phase(record.name, Phase.COLLECTING)
        try:
            self.backend.pull(record, staging, self.settings.rsync_timeout)
        except OperationError:
            if state is WorkerState.DONE or state not in ENDED:
                raise  # a finished worker we cannot reach yet: try again next pass
            staging.mkdir(parents=True, exist_ok=True)  # gone with its data: nothing to take
        try:
            done = read_done(staging)
        except BadSummary as exc:
            self._hold(record, [str(exc)])
            report.held.append(record.name)
            return
        if done is not None:  # a worker whose every run failed for the host's fault says so
            record_file_host(self.settings, transient=_count(done, "runs_transient"),
                             ok=_count(done, "runs_ok"), now=now)
        accessions = AccessionList.of(self.settings, record.taxon_id)
        expected = accessions.get(record.runs)
        # Runs taken home while it fetched are done; the rest are judged now.
        left = [a for a in record.runs
                if not (a in expected and expected[a].status is RunStatus.FETCHED
                        and expected[a].worker == record.name)]
        verdict = verify_worker_output(staging, left, expected, finished=done is not None,
                                       products=record.extra.get("products", "reads"))
        if verdict.problems:
            self._hold(record, verdict.problems)
            report.held.append(record.name)
            return
        self._move_home(record, verdict)
        crashed = state is WorkerState.CRASHED
        self._record_runs(accessions, record, verdict, now, untried_count=crashed)
        self.backend.destroy(record)
        ended = "" if done is not None else (
            "the runner kept crashing; its supervisor gave up" if crashed
            else "the worker stopped before it finished")
        self._set_phase(record.name, Phase.DESTROYED, ended)
        shutil.rmtree(staging, ignore_errors=True)
        settled(self.settings, self.registry, self.store, record.taxon_id, ACTOR)
        (report.collected if done is not None else report.lost).append(record.name)
        report.runs_fetched += len(verdict.ok)
        report.runs_failed += len(verdict.failed)
        report.bytes_fetched += verdict.bytes_ok
        taxon_log(record.taxon_id).info(
            "collected {}{}: {} runs fetched, {} failed, {} failed for the host's fault, {} "
            "not finished, {} bytes", record.name, f" ({ended})" if ended else "",
            len(verdict.ok), len(verdict.failed), len(verdict.transient),
            len(verdict.untried), verdict.bytes_ok)

    def _move_home(self, record: WorkerRecord, verdict: Verdict) -> None:
        genomes = Path(self.settings.data_dir) / "genomes" / str(record.taxon_id)
        for run, files in verdict.ok.items():
            for staged in files:
                target = genomes / run / staged.name
                target.parent.mkdir(parents=True, exist_ok=True)
                staged.replace(target)

    def _record_runs(self, accessions: AccessionList, record: WorkerRecord, verdict: Verdict,
                     now: datetime, untried_count: bool = False) -> None:
        """Fold a verdict into the runs, by the one attempt rule (:func:`release`)."""
        given_back = [*verdict.failed, *verdict.transient, *verdict.untried]
        with accessions.edit([*verdict.ok, *given_back]) as runs:
            for accession in verdict.ok:
                run = runs[accession]
                run.status, run.fetched_at = RunStatus.FETCHED, now
                run.droplet_ip, run.last_error = "", ""
                if accession in verdict.assemblies:
                    note_assembly(run, verdict.assemblies[accession])
            causes = [(verdict.failed, Cause.CONTENT), (verdict.transient, Cause.TRANSIENT)]
            untried = {a: "the worker stopped before it tried this run"
                       for a in verdict.untried}
            causes.append((untried, Cause.TRIED if untried_count else Cause.NOT_TRIED))
            runs_released(runs, record.name, [
                (accession, cause, f"worker {record.name}: {error}")
                for errors, cause in causes for accession, error in errors.items()],
                self.settings.max_attempts)
            if verdict.ok:
                accessions.db.connection().execute(
                    "INSERT INTO fetch_events (taxon, at, runs, bytes) VALUES (?, ?, ?, ?)",
                    (record.taxon_id, format_time(now), len(verdict.ok), verdict.bytes_ok))

    def _hold(self, record: WorkerRecord, problems: Sequence[str]) -> None:
        self._set_phase(record.name, Phase.HELD, "; ".join(problems))
        # A person may have asked for this collection: the newest reason replaces the old.
        reason = parked(
            self.registry, record.taxon_id, ACTOR,
            f"worker {record.name} kept: its data failed verification at home "
            f"({'; '.join(problems[:3])})",
            f"check the source, then `microfetch collect {record.taxon_id}` to try again or "
            f"`microfetch workers destroy {record.name}` to give its runs back",
            status=Status.ERROR, replace=True).reason
        taxon_log(record.taxon_id).error(reason)

    def _set_phase(self, name: str, phase: Phase, error: str = "") -> None:
        with self.store.edit(name) as record:
            record.phase = phase
            if error:
                record.last_error = error


def _count(done: dict[str, Any], key: str) -> int:
    value = done.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def note_assembly(run: Run, report: dict[str, Any]) -> None:
    """The numbers of a run's assembly report, on the run (the accession list's columns)."""
    assembled = report.get("status") == "assembled"
    run.assembly_status = "assembled" if assembled else "failed"
    run.assembly_path = f"{run.accession}/{run.accession}.contigs.fa.gz" if assembled else ""
    run.assembly_md5 = str(report.get("contigs_md5") or "") if assembled else ""
    for name in ("contigs", "total_length", "n50"):
        value = report.get(name)
        setattr(run, name, value if isinstance(value, int) and not isinstance(value, bool)
                else None)
    run.assembly_error = " ".join(str(report.get("error") or "").split())[:500]
