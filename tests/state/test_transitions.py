"""Taxon transitions on a real registry (files on disk), and the rule that nothing else writes
a taxon's stage, status, needs_attention or droplet_ips."""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.errors import UnknownTaxonError, UsageError
from backend.settings import Settings, load_settings
from backend.state.accessions import AccessionList, Run, RunStatus
from backend.state.attempts import Cause
from backend.state.registry import Registry, Stage, Status, Taxon
from backend.state.transitions import (
    CHECK_PARK_PREFIX,
    FIELDS,
    checked,
    checking,
    cleared,
    dispatched,
    lift_old_outage_parks,
    park_reason,
    parked,
    ready,
    retried,
    runs_released,
    selected,
    settled,
    warned,
    worker_runs_released,
)
from backend.state.workers import Phase, WorkerRecord, WorkerStore, token_hash, worker_name
from backend.timeutil import utc_now

from ..conftest import SRC

TAXON = 562


@dataclass
class Site:
    settings: Settings
    registry: Registry
    store: WorkerStore

    @property
    def row(self) -> Taxon:
        return self.registry.get(TAXON)

    def actors(self, field: str) -> list[str]:
        return [e["actor"] for e in self.registry.history(TAXON) if e["field"] == field]

    def add_runs(self, *accessions: str) -> None:
        with AccessionList.of(self.settings, TAXON).edit() as runs:
            for accession in accessions:
                runs[accession] = Run(accession, fastq_files=(f"h/{accession}_1.fastq.gz",),
                                      fastq_bytes=(10,), fastq_md5=("0" * 32,))

    def worker(self, *accessions: str, chunk: int = 0, address: str = "10.0.0.5",
               phase: Phase = Phase.RUNNING) -> WorkerRecord:
        """A live worker holding these runs (assigned to it)."""
        record = WorkerRecord(
            name=worker_name(TAXON, chunk), backend="local", taxon_id=TAXON, chunk=chunk,
            runs=list(accessions), bytes=10 * len(accessions), token_sha256=token_hash("t"),
            created_at=utc_now(), phase=phase, address=address)
        self.store.create(record)
        with AccessionList.of(self.settings, TAXON).edit(accessions) as runs:
            for run in runs.values():
                run.status, run.worker = RunStatus.ASSIGNED, record.name
        return record

    def runs(self) -> dict[str, Run]:
        return AccessionList.of(self.settings, TAXON).load()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    settings = load_settings({"MICROFETCH_CSV": str(tmp_path / "microfetch.csv"),
                              "MICROFETCH_DATA_DIR": str(tmp_path / "data"),
                              "MICROFETCH_MAX_ATTEMPTS": "2"})
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("test") as table:
        table[TAXON] = Taxon(TAXON, "Escherichia coli")
    return Site(settings, registry, WorkerStore.of(settings))


# The transitions ---------------------------------------------------------------------------------

def test_a_check_starts_then_hands_over_to_the_filter(site):
    checking(site.registry, TAXON, "check")
    assert (site.row.stage, site.row.last_run_status) == (Stage.CHECK, Status.IN_PROGRESS)
    now = utc_now()
    checked(site.registry, TAXON, now, True, "check")
    row = site.row
    assert (row.stage, row.last_checked, row.generated_warning) == (Stage.FILTER, now, True)
    assert site.actors("stage") == ["check"]
    with open(site.registry.path, newline="", encoding="utf-8") as handle:
        on_disk = next(csv.DictReader(handle))
    assert (on_disk["stage"], on_disk["stage_name"]) == ("filter", "select runs")


def test_settling_follows_the_runs_and_the_live_workers(site):
    site.add_runs("ERR0000001", "ERR0000002")
    selected(site.settings, site.registry, TAXON)
    assert (site.row.stage, site.row.last_run_status) == (Stage.DISPATCH, Status.IN_PROGRESS)

    record = site.worker("ERR0000001", "ERR0000002")
    dispatched(site.settings, site.registry, site.store, TAXON)
    row = site.row
    assert (row.stage, row.last_run_status, row.droplet_ips) == (
        Stage.WAIT, Status.IN_PROGRESS, ("10.0.0.5",))
    ready(site.registry, TAXON, f"worker:{record.name}")
    assert site.row.last_run_status is Status.READY

    with AccessionList.of(site.settings, TAXON).edit() as runs:
        for run in runs.values():
            run.status = RunStatus.FETCHED
    with site.store.edit(record.name) as current:
        current.phase = Phase.DESTROYED
    settled(site.settings, site.registry, site.store, TAXON)
    row = site.row
    assert (row.stage, row.last_run_status, row.droplet_ips) == (Stage.CHECK, Status.COMPLETE, ())
    assert site.actors("stage") == ["filter", "dispatcher", "collector"]
    assert site.actors("droplet_ips") == ["dispatcher", "collector"]


def test_ready_only_follows_in_progress(site):
    ready(site.registry, TAXON, "worker:x")
    assert site.row.last_run_status is Status.NEW
    settled(site.settings, site.registry, site.store, 999)  # a removed taxon: nothing happens


def test_a_warning_can_leave_an_error_as_it_is(site):
    warned(site.registry, TAXON, "daemon")
    assert (site.row.last_run_status, site.row.generated_warning) == (Status.WARNING, True)
    parked(site.registry, TAXON, "daemon", "it broke", status=Status.ERROR)
    warned(site.registry, TAXON, "daemon", keep_error=True)
    assert site.row.last_run_status is Status.ERROR
    warned(site.registry, TAXON, "dispatcher")
    assert site.row.last_run_status is Status.WARNING


def test_a_park_has_one_reason_format_and_the_first_reason_stays(site):
    assert park_reason(TAXON, "ENA said\n  HTTP 400") == \
        "ENA said HTTP 400; once that is fixed, `microfetch attention clear 562`"
    assert park_reason(TAXON, "disk full", "") == "disk full"

    first = parked(site.registry, TAXON, "reconciler", "worker w is old", "check it")
    assert first == ("worker w is old; check it", True)
    again = parked(site.registry, TAXON, "daemon", "something else", status=Status.ERROR)
    assert again == ("worker w is old; check it", False)
    row = site.row
    assert (row.needs_attention, row.last_run_status, row.generated_warning) == (
        "worker w is old; check it", Status.ERROR, True)

    newest = parked(site.registry, TAXON, "cli:alice", "disk full", "", replace=True)
    assert newest == ("disk full", True) and site.row.needs_attention == "disk full"
    assert site.actors("needs_attention") == ["reconciler", "cli:alice"]

    assert cleared(site.registry, TAXON, "web:admin") == "disk full"
    assert site.row.needs_attention == ""
    assert cleared(site.registry, TAXON, "web:admin") == ""


def test_a_park_of_a_missing_taxon_or_with_no_reason(site):
    assert parked(site.registry, 999, "names", "unknown id") == ("", False)
    with pytest.raises(UnknownTaxonError):
        parked(site.registry, 999, "cli:alice", "disk full", "", must_exist=True)
    with pytest.raises(UnknownTaxonError):
        cleared(site.registry, 999, "cli:alice")
    with pytest.raises(UsageError):
        parked(site.registry, TAXON, "cli:alice", "  ", "")
    assert site.row.needs_attention == ""


def test_parks_an_older_release_made_for_outages_are_lifted(site):
    parked(site.registry, TAXON, "daemon", f"{CHECK_PARK_PREFIX}3 times in a row", "",
           status=Status.ERROR)
    assert lift_old_outage_parks(site.registry, "daemon") == [TAXON]
    assert (site.row.needs_attention, site.row.last_run_status) == ("", Status.WARNING)
    assert lift_old_outage_parks(site.registry, "daemon") == []


def test_runs_are_released_by_the_attempt_rule_only_from_their_own_worker(site):
    site.add_runs("ERR0000001", "ERR0000002", "ERR0000003", "ERR0000004")
    mine = site.worker("ERR0000001", "ERR0000002", "ERR0000003")
    other = site.worker("ERR0000004", chunk=1)
    accessions = AccessionList.of(site.settings, TAXON)
    with accessions.edit() as runs:
        released = runs_released(runs, mine.name, [
            ("ERR0000001", Cause.CONTENT, "MD5 mismatch"),
            ("ERR0000002", Cause.TRANSIENT, "HTTP 503"),
            ("ERR0000004", Cause.CONTENT, "not this worker's run"),
            ("ERR0000009", Cause.CONTENT, "no such run"),
        ], site.settings.max_attempts)
    assert released == 2
    runs = site.runs()
    assert (runs["ERR0000001"].status, runs["ERR0000001"].attempts) == (RunStatus.PENDING, 1)
    assert (runs["ERR0000002"].status, runs["ERR0000002"].attempts) == (RunStatus.PENDING, 0)
    assert runs["ERR0000002"].last_error == "HTTP 503"
    assert runs["ERR0000004"].status is RunStatus.ASSIGNED

    # A whole worker: only what is still assigned to it, never twice.
    assert worker_runs_released(site.settings, mine, Cause.NOT_TRIED, "it vanished") == 1
    assert worker_runs_released(site.settings, mine, Cause.NOT_TRIED, "it vanished") == 0
    assert site.runs()["ERR0000003"].attempts == 0
    assert worker_runs_released(site.settings, other, Cause.TRIED, "kept crashing") == 1
    assert site.runs()["ERR0000004"].attempts == 1


def test_failed_runs_are_retried_and_the_taxon_settles(site):
    site.add_runs("ERR0000001", "ERR0000002")
    record = site.worker("ERR0000001")
    for _ in range(site.settings.max_attempts):
        with AccessionList.of(site.settings, TAXON).edit() as runs:
            runs["ERR0000001"].status = RunStatus.ASSIGNED
            runs_released(runs, record.name, [("ERR0000001", Cause.CONTENT, "HTTP 404")],
                          site.settings.max_attempts)
    run = site.runs()["ERR0000001"]
    assert run.excluded and run.exclusion_code == "failed_attempts"
    with site.store.edit(record.name) as current:
        current.phase = Phase.DESTROYED
    with AccessionList.of(site.settings, TAXON).edit() as runs:
        runs["ERR0000002"].status = RunStatus.FETCHED
    settled(site.settings, site.registry, site.store, TAXON)
    assert site.row.last_run_status is Status.COMPLETE

    assert retried(site.settings, TAXON, "api:admin") == 1
    run = site.runs()["ERR0000001"]
    assert (run.excluded, run.status, run.attempts) == (False, RunStatus.PENDING, 0)
    assert (site.row.stage, site.row.last_run_status) == (Stage.DISPATCH, Status.IN_PROGRESS)
    assert site.actors("stage")[-1] == "api:admin"
    assert retried(site.settings, TAXON) == 0
    with pytest.raises(UnknownTaxonError):
        retried(site.settings, 999)


# Nothing else writes the four fields -------------------------------------------------------------

#: Modules allowed to write them: the transitions, the registry that defines the columns, and
#: the import of an older release's files.
ALLOWED = {"backend/state/transitions.py", "backend/state/registry.py",
           "backend/state/legacy.py"}
#: Calls whose keyword arguments name a field but build something else: the API's answers.
NOT_A_ROW = "schemas."


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        found = [node.target]
    else:
        return []
    flat: list[ast.AST] = []
    while found:
        target = found.pop()
        if isinstance(target, ast.Tuple | ast.List):
            found.extend(target.elts)
        elif isinstance(target, ast.Starred):
            found.append(target.value)
        else:
            flat.append(target)
    return flat


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def writes_of_taxon_fields(source: str, filename: str) -> list[str]:
    """Where a module assigns a taxon's stage, last_run_status, needs_attention or droplet_ips:
    ``x.field = ...`` (also in tuples and augmented), a call with ``field=...`` (``update``,
    ``Taxon``, ``replace``, a helper), ``registry.update(**changes)`` (it cannot tell which)
    and ``setattr(x, "field", ...)``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and target.attr in FIELDS:
                found.append(f"{filename}:{node.lineno}: assigns .{target.attr}")
        if not isinstance(node, ast.Call):
            continue
        name, func = _call_name(node), ast.unparse(node.func)
        if not func.startswith(NOT_A_ROW):
            found += [f"{filename}:{node.lineno}: {func}({k.arg}=...)"
                      for k in node.keywords if k.arg in FIELDS]
        if name == "update" and "registry" in func and any(k.arg is None
                                                           for k in node.keywords):
            found.append(f"{filename}:{node.lineno}: {func}(**...)")
        if name == "setattr" and len(node.args) >= 2:
            field = node.args[1]
            if isinstance(field, ast.Constant) and field.value in FIELDS:
                found.append(f"{filename}:{node.lineno}: setattr(..., {field.value!r}, ...)")
    return found


def test_the_scan_sees_each_way_of_writing_a_field():
    source = "\n".join([
        "row.stage = 1",
        "row.stage, row.last_run_status = 1, 2",  # two
        "a.needs_attention += 'x'",
        "registry.update(1, 'me', droplet_ips=())",
        "Taxon(1, stage=2)",
        "replace(row, last_run_status=3)",
        "_update(registry, 1, needs_attention='why')",
        "self.registry.update(1, 'me', **changes)",
        "setattr(row, 'needs_attention', '')",
        "setattr(row, name, value)",  # a name it cannot tell is not counted
        "run.status = 1",  # a run's status is not the taxon's
        "schemas.AttentionCleared(needs_attention='')",  # an answer of the API, not a row
        "settings.with_overrides(**options)",
        "setattr(run, 'assembly_md5', '')",
    ])
    assert len(writes_of_taxon_fields(source, "x.py")) == 10


def test_only_the_transitions_write_a_taxon_s_stage_status_attention_and_addresses():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative not in ALLOWED:
            found += writes_of_taxon_fields(path.read_text(encoding="utf-8"), relative)
    assert found == [], "write these through backend.state.transitions:\n" + "\n".join(found)
