"""Dispatch to the local backend, let the real chunk runner fetch, collect home."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

from backend.collection.collect import Collector
from backend.jobs.dispatch import Dispatcher
from backend.state.accessions import RunStatus
from backend.state.registry import Stage, Status
from backend.state.workers import Phase
from backend.timeutil import utc_now

from ..daemon.conftest import runner_processes
from ..loopback import Fault, md5
from .conftest import TAXON


def local_lab(lab):
    settings = lab.settings.with_overrides(fastq_scheme="http", callback_url="")
    lab.settings = settings
    lab.backend.settings = settings
    return Dispatcher(settings, lab.backend, lab.registry, lab.store)


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_runs_are_fetched_by_a_local_worker_and_collected_home(lab, file_server):
    dispatcher = local_lab(lab)
    contents = lab.serve_runs(file_server, 4)

    report = dispatcher.dispatch(TAXON, utc_now())

    (name,) = report.started
    record = lab.store.get(name)
    assert record.phase is Phase.RUNNING
    assert (lab.backend.folder(record) / "token").stat().st_mode & 0o777 == 0o600
    assert {r.status for r in lab.accessions.load().values()} == {RunStatus.ASSIGNED}
    row = lab.registry.get(TAXON)
    assert (row.stage, row.last_run_status, row.droplet_ips) == (
        Stage.WAIT, Status.IN_PROGRESS, ("localhost",))
    assert [e["field"] for e in lab.registry.history(TAXON)].count("cost_estimate") == 1

    wait_for(lambda: (lab.backend.folder(record) / "out" / "DONE.json").exists())
    collected = Collector(lab.settings, lab.backend, lab.registry, lab.store).collect()

    assert collected.collected == [name]
    for acc, files in contents.items():
        for file_name, data in files.items():
            path = lab.genomes() / acc / file_name
            assert hashlib.md5(path.read_bytes()).hexdigest() == md5(data)
    assert {r.status for r in lab.accessions.load().values()} == {RunStatus.FETCHED}
    assert len((lab.genomes() / "samplesheet.csv").read_text().splitlines()) == 1 + 4
    assert not lab.backend.folder(record).exists()
    assert not any((lab.settings.data_dir / "staging").iterdir())
    assert not (lab.settings.data_dir / "outbox" / name).exists()
    assert lab.registry.get(TAXON).last_run_status is Status.COMPLETE


def test_a_worker_killed_mid_chunk_brings_its_verified_runs_home_and_gives_back_the_rest(
        lab, file_server):
    dispatcher = local_lab(lab)
    contents = lab.serve_runs(file_server, 4)
    stalled = sorted(contents)[2:]  # two runs finish, two hang until the kill
    for acc in stalled:
        for name in contents[acc]:
            file_server.faults[f"/vol1/fastq/{acc}/{name}"] = Fault("stall", after=50, times=99)
    lab.settings = lab.settings.with_overrides(chunk_max_runs=4)
    dispatcher.settings = lab.settings
    (name,) = dispatcher.dispatch(TAXON, utc_now()).started
    record = lab.store.get(name)
    manifest = lab.backend.folder(record) / "out" / "manifest.tsv"
    wait_for(lambda: manifest.exists() and len(manifest.read_text().splitlines()) == 1 + 4)
    os.killpg(int(record.extra["pid"]), signal.SIGKILL)
    wait_for(lambda: lab.backend.status(lab.store.get(name)).value == "gone", 10)

    report = Collector(lab.settings, lab.backend, lab.registry, lab.store).collect()

    assert report.lost == [name]
    runs = lab.accessions.load()
    finished = sorted(set(contents) - set(stalled))
    assert {a for a, r in runs.items() if r.status is RunStatus.FETCHED} == set(finished)
    for acc in finished:
        for file_name, data in contents[acc].items():
            assert (lab.genomes() / acc / file_name).read_bytes() == data
    for acc in stalled:
        assert runs[acc].status is RunStatus.PENDING
        assert runs[acc].attempts == 0  # never finished by the worker: costs nothing
        assert "stopped before it tried" in runs[acc].last_error
    assert not lab.backend.folder(record).exists()
    assert lab.registry.get(TAXON).stage is Stage.DISPATCH


def test_a_runner_environment_holds_no_secret_of_the_daemon(lab, file_server, monkeypatch):
    monkeypatch.setenv("MICROFETCH_ADMIN_TOKEN", "admin-secret-123")
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "do-secret-456")
    dispatcher = local_lab(lab)
    contents = lab.serve_runs(file_server, 1)
    for acc in contents:
        for name in contents[acc]:
            file_server.faults[f"/vol1/fastq/{acc}/{name}"] = Fault("stall", after=50, times=99)
    (name,) = dispatcher.dispatch(TAXON, utc_now()).started
    folder = lab.backend.folder(lab.store.get(name))
    try:
        wait_for(lambda: len(runner_processes(folder)) >= 2)  # the supervisor and its runner
        for pid in runner_processes(folder):
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"admin-secret-123" not in environ and b"do-secret-456" not in environ
            assert b"MICROFETCH_" not in environ
    finally:
        lab.backend.destroy(lab.store.get(name))
    assert runner_processes(folder) == []


def test_dispatch_waits_when_every_worker_slot_is_taken(lab, file_server):
    dispatcher = local_lab(lab)
    lab.settings = lab.settings.with_overrides(max_workers=1, chunk_max_runs=1)
    dispatcher.settings = lab.settings
    lab.backend.settings = lab.settings
    lab.serve_runs(file_server, 3)
    first = dispatcher.dispatch(TAXON, utc_now())
    assert len(first.started) == 1
    second = dispatcher.dispatch(TAXON, utc_now())
    assert second.started == [] and "no free worker" in second.waiting
    pending = [r for r in lab.accessions.load().values() if r.status is RunStatus.PENDING]
    assert len(pending) == 2


def test_a_run_larger_than_a_worker_is_excluded_as_too_large(lab, file_server):
    dispatcher = local_lab(lab)
    lab.settings = lab.settings.with_overrides(worker_disk_gb=0.00001)  # 10 kB
    dispatcher.settings = lab.backend.settings = lab.settings
    lab.serve_runs(file_server, 1)
    with lab.accessions.edit() as runs:
        runs["ERR1001"].fastq_bytes = (9000, 9000)
    report = dispatcher.dispatch(TAXON, utc_now())
    assert report.too_large == ["ERR1001"]
    run = lab.accessions.load()["ERR1001"]
    assert run.excluded and run.exclusion_reason.startswith("too_large: 18000 bytes")
    assert lab.registry.get(TAXON).last_run_status is Status.COMPLETE


def test_a_claimed_worker_is_started_once_after_a_crash(lab, file_server):
    dispatcher = local_lab(lab)
    lab.serve_runs(file_server, 2)
    pending = list(lab.accessions.load().values())
    name, starting = dispatcher._claim(TAXON, pending)  # the crash came right after the claim
    assert lab.store.get(name).phase is Phase.CLAIMED
    assert dispatcher.resume() == []  # while its claimer lives, nobody else starts it
    starting.release()  # what the operating system does when the claimer dies

    assert dispatcher.resume() == [name]
    assert dispatcher.resume() == []
    assert len(lab.store.live()) == 1
    record = lab.store.get(name)
    wait_for(lambda: (lab.backend.folder(record) / "out" / "DONE.json").exists())
    assert Collector(lab.settings, lab.backend, lab.registry, lab.store).collect().collected \
        == [name]


def test_dispatch_waits_with_a_warning_when_home_lacks_disk(lab, file_server, monkeypatch):
    import shutil as real_shutil

    dispatcher = local_lab(lab)
    lab.serve_runs(file_server, 2)
    full = real_shutil.disk_usage(lab.settings.data_dir)._replace(free=1000)
    monkeypatch.setattr("backend.jobs.dispatch.shutil.disk_usage", lambda path: full)
    report = dispatcher.dispatch(TAXON, utc_now())
    assert report.started == [] and report.waiting == "not enough free disk at home"
    row = lab.registry.get(TAXON)
    assert row.last_run_status is Status.WARNING and row.generated_warning
    assert row.stage is Stage.DISPATCH
    assert not lab.store.all()


def test_a_daemon_killed_right_after_a_spawn_starts_no_second_runner(lab, file_server):
    from backend.compute.local import _spawn_supervisor

    dispatcher = local_lab(lab)
    contents = lab.serve_runs(file_server, 1)
    for acc in contents:
        for name in contents[acc]:
            file_server.faults[f"/vol1/fastq/{acc}/{name}"] = Fault("stall", after=50, times=99)
    name, starting = dispatcher._claim(TAXON, list(lab.accessions.load().values()))
    record = lab.store.get(name)
    folder = lab.backend.folder(record)
    shutil.copytree(dispatcher.outbox(name), folder)
    with lab.store.edit(name) as current:  # what start() saved before it spawned...
        current.phase = Phase.STARTING
    _spawn_supervisor(folder)  # ...and the spawn; then the daemon died before saving the pid
    starting.release()
    try:
        wait_for(lambda: len(runner_processes(folder)) >= 2)
        before = sorted(runner_processes(folder))

        assert dispatcher.resume() == [name]  # the restart takes it over

        assert sorted(runner_processes(folder)) == before  # the same supervisor and runner
        assert lab.store.get(name).phase is Phase.RUNNING
    finally:
        lab.backend.destroy(lab.store.get(name))
    assert runner_processes(folder) == []


def test_finished_runs_come_home_while_the_worker_fetches_the_rest(lab, file_server):
    dispatcher = local_lab(lab)
    lab.settings = lab.settings.with_overrides(chunk_max_runs=4, collect_while_fetching=True)
    dispatcher.settings = lab.backend.settings = lab.settings
    contents = lab.serve_runs(file_server, 4)
    stalled = sorted(contents)[2:]
    for acc in stalled:
        for name in contents[acc]:
            file_server.faults[f"/vol1/fastq/{acc}/{name}"] = Fault("stall", after=50, times=99)
    (name,) = dispatcher.dispatch(TAXON, utc_now()).started
    record = lab.store.get(name)
    out = lab.backend.folder(record) / "out"
    wait_for(lambda: (out / "manifest.tsv").exists()
             and len((out / "manifest.tsv").read_text().splitlines()) == 1 + 4)
    collector = Collector(lab.settings, lab.backend, lab.registry, lab.store)

    report = collector.collect()

    finished = sorted(set(contents) - set(stalled))
    runs = lab.accessions.load()
    assert report.runs_fetched == 2 and report.collected == []  # the worker goes on
    assert {a for a, r in runs.items() if r.status is RunStatus.FETCHED} == set(finished)
    for acc in finished:
        assert not (out / acc).exists()  # its disk holds only the work in flight
        for file_name, data in contents[acc].items():
            assert (lab.genomes() / acc / file_name).read_bytes() == data

    file_server.faults.clear()  # the host answers again: the worker finishes the rest
    wait_for(lambda: (out / "DONE.json").exists(), 90)
    final = collector.collect()
    assert final.collected == [name] and final.runs_fetched == 2
    assert {r.status for r in lab.accessions.load().values()} == {RunStatus.FETCHED}
    assert all(r.attempts == 0 for r in lab.accessions.load().values())
