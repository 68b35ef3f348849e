"""Collection on the local backend: verified data home, runs marked, workers destroyed."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from datetime import timedelta

from backend.collection.collect import Collector
from backend.jobs.reconcile import reconcile
from backend.state.accessions import RunStatus
from backend.state.attempts import another_round
from backend.state.registry import Stage, Status
from backend.state.transitions import retried as retry_runs
from backend.state.workers import Phase

from ..conftest import cli_env
from .conftest import TAXON


def collector(lab) -> Collector:
    return Collector(lab.settings, lab.backend, lab.registry, lab.store)


def test_a_finished_worker_is_collected_verified_and_destroyed(lab):
    contents = lab.add_runs("ERR0000001", "ERR0000002")
    record = lab.finished_worker(contents)

    report = collector(lab).collect()

    assert report.collected == [record.name]
    assert report.runs_fetched == 2
    for acc, files in contents.items():
        for name, data in files.items():
            home = lab.genomes() / acc / name
            assert hashlib.md5(home.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    runs = lab.accessions.load()
    assert {r.status for r in runs.values()} == {RunStatus.FETCHED}
    assert all(r.fetched_at is not None and r.droplet_ip == "" for r in runs.values())
    assert not lab.backend.folder(record).exists()
    assert lab.store.get(record.name).phase is Phase.DESTROYED
    assert not (lab.settings.data_dir / "staging" / record.name).exists()
    row = lab.registry.get(TAXON)
    assert row.droplet_ips == ()
    assert row.last_run_status is Status.COMPLETE
    assert row.stage is Stage.CHECK


def test_the_samplesheet_lists_fetched_runs_with_absolute_paths(lab):
    lab.finished_worker(lab.add_runs("ERR0000001", "SRR0000002"))
    collector(lab).collect()
    with open(lab.genomes() / "samplesheet.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sample"] for r in rows] == ["ERR0000001", "SRR0000002"]
    assert rows[0]["fastq_1"] == str((lab.genomes() / "ERR0000001" / "ERR0000001_1.fastq.gz")
                                     .resolve())
    assert rows[0]["fastq_2"].endswith("ERR0000001/ERR0000001_2.fastq.gz")


def test_a_file_corrupted_after_the_worker_verified_it_keeps_the_worker(lab):
    contents = lab.add_runs("ERR0000001", "ERR0000002")
    record = lab.finished_worker(contents)
    bad = lab.backend.folder(record) / "out" / "ERR0000002" / "ERR0000002_2.fastq.gz"
    data = bytearray(bad.read_bytes())
    data[10] ^= 0xFF
    bad.write_bytes(bytes(data))

    report = collector(lab).collect()

    assert report.held == [record.name]
    assert lab.backend.folder(record).exists()
    assert lab.store.get(record.name).phase is Phase.HELD
    assert {r.status for r in lab.accessions.load().values()} == {RunStatus.ASSIGNED}
    assert not (lab.genomes() / "ERR0000001").exists()
    row = lab.registry.get(TAXON)
    assert "ERR0000002/ERR0000002_2.fastq.gz has MD5" in row.needs_attention
    assert row.last_run_status is Status.ERROR
    assert row.droplet_ips == ("127.0.0.1",)


def test_the_daemon_leaves_a_held_worker_alone_until_a_person_acts(lab):
    contents = lab.add_runs("ERR0000001")
    record = lab.finished_worker(contents)
    bad = lab.backend.folder(record) / "out" / "ERR0000001" / "ERR0000001_1.fastq.gz"
    bad.write_bytes(b"garbage" * 10)
    collector(lab).collect()
    assert collector(lab).collect().held == []  # parked taxon: the daemon's pass skips it
    bad.write_bytes(contents["ERR0000001"]["ERR0000001_1.fastq.gz"])  # a person fixed it
    report = collector(lab).collect(force=True)
    assert report.collected == [record.name]
    assert lab.accessions.load()["ERR0000001"].status is RunStatus.FETCHED


def test_failed_runs_are_retried_up_to_the_bound_then_excluded(lab):
    contents = lab.add_runs("ERR0000001", "ERR0000002")
    for attempt in range(1, 4):
        lab.finished_worker(contents if attempt == 1 else {"ERR0000002": contents["ERR0000002"]},
                            chunk=attempt, failed=("ERR0000002",))
        collector(lab).collect()
        run = lab.accessions.load()["ERR0000002"]
        assert run.attempts == attempt
        assert "HTTP 404" in run.last_error
        if attempt < 3:
            assert run.status is RunStatus.PENDING and not run.excluded
            assert lab.registry.get(TAXON).stage is Stage.DISPATCH
    assert run.excluded
    assert run.exclusion_reason.startswith("failed_attempts: 3 attempts failed")
    assert lab.accessions.load()["ERR0000001"].status is RunStatus.FETCHED
    assert lab.registry.get(TAXON).last_run_status is Status.COMPLETE

    assert retry_runs(lab.settings, TAXON) == 1
    run = lab.accessions.load()["ERR0000002"]
    assert (run.excluded, run.status, run.attempts) == (False, RunStatus.PENDING, 0)
    assert lab.registry.get(TAXON).stage is Stage.DISPATCH


def test_retry_through_the_cli_reports_the_runs_it_brought_back(lab, run_cli, tmp_path):
    contents = lab.add_runs("ERR0000001")
    lab.finished_worker(contents, failed=("ERR0000001",))
    collector(lab).collect()
    result = run_cli("retry", str(TAXON))
    assert result.returncode == 0, result.stderr
    assert "1 runs of taxon 562 are pending again" in result.stdout
    assert run_cli("retry", "999").returncode == 2


def test_two_collections_at_once_collect_each_worker_once(lab, tmp_path):
    contents = lab.add_runs(*(f"ERR00000{i:02d}" for i in range(1, 7)))
    lab.finished_worker(contents)
    env = cli_env(tmp_path, MICROFETCH_DATA_DIR=str(lab.settings.data_dir))
    code = "import sys; from backend.cli.main import main; sys.exit(main(['collect']))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    collected = "".join(out for out, _ in outputs).count("collected mf-")
    assert collected == 1
    assert len(list((lab.genomes()).glob("ERR*/*.fastq.gz"))) == 12
    history = lab.registry.history(TAXON, limit=1000)
    assert sum(1 for e in history if e["field"] == "droplet_ips") == 2  # set once, dropped once


def test_the_workers_command_lists_live_workers(lab, run_cli, tmp_path):
    record = lab.finished_worker(lab.add_runs("ERR0000001"))
    env = cli_env(tmp_path, MICROFETCH_DATA_DIR=str(lab.settings.data_dir))
    result = run_cli("workers", env=env)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == ["name", "taxon", "backend", "address",
                                                     "age", "state"]
    assert result.stdout.splitlines()[1].split()[:4] == [record.name, "562", "local",
                                                        "127.0.0.1"]


def test_a_done_json_that_is_not_json_holds_the_worker_with_the_reason(lab):
    contents = lab.add_runs("ERR0000001")
    record = lab.finished_worker(contents)
    (lab.backend.folder(record) / "out" / "DONE.json").write_text("{not json")

    report = Collector(lab.settings, lab.backend, lab.registry, lab.store).collect()

    assert report.held == [record.name]
    assert lab.store.get(record.name).phase is Phase.HELD
    reason = lab.registry.get(TAXON).needs_attention
    assert "DONE.json is not JSON" in reason and f"workers destroy {record.name}" in reason
    assert lab.accessions.load()["ERR0000001"].status is RunStatus.ASSIGNED


def test_a_worker_stuck_starting_past_its_deadline_is_flagged_with_what_to_do(lab):
    contents = lab.add_runs("ERR0000001")
    record = lab.finished_worker(contents)
    (lab.backend.folder(record) / "out" / "DONE.json").unlink()
    with lab.store.edit(record.name) as current:
        current.phase = Phase.STARTING
    since = lab.store.get(record.name).phase_since

    early = reconcile(lab.settings, lab.backend, lab.store, lab.registry,
                      since + timedelta(minutes=29))
    report = reconcile(lab.settings, lab.backend, lab.store, lab.registry,
                       since + timedelta(minutes=31))

    assert early.flagged == [] and report.flagged == [record.name]
    reason = lab.registry.get(TAXON).needs_attention
    assert f"worker {record.name} has been starting since" in reason
    assert "MICROFETCH_START_DEADLINE_MINUTES" in reason


def test_a_file_wrong_at_ena_gets_a_bounded_number_of_rounds_then_stays_excluded(lab):
    settings = lab.settings.with_overrides(max_attempts=2, retry_failed_rounds=1)
    collector = Collector(settings, lab.backend, lab.registry, lab.store)
    contents = lab.add_runs("ERR0000001")
    chunk = iter(range(100))

    def fail_until_given_up() -> None:
        for _ in range(settings.max_attempts):
            lab.finished_worker(contents, chunk=next(chunk), failed=("ERR0000001",))
            collector.collect()
        run = lab.accessions.load()["ERR0000001"]
        assert run.exclusion_code == "failed_attempts" and run.given_up_at is not None

    fail_until_given_up()
    given_up = lab.accessions.load()["ERR0000001"].given_up_at
    db, after = lab.accessions.db, timedelta(hours=settings.retry_failed_after_hours)
    assert another_round(db, TAXON, given_up + after - timedelta(minutes=1), after, 1) == 0
    assert another_round(db, TAXON, given_up + after, after, 1) == 1  # after its cool-off
    run = lab.accessions.load()["ERR0000001"]
    assert (run.status, run.attempts, run.rounds, run.excluded) == (RunStatus.PENDING, 0, 1,
                                                                    False)
    assert run.last_error.startswith("another round after a cool-off; before: failed_attempts")

    fail_until_given_up()  # still wrong at ENA
    later = lab.accessions.load()["ERR0000001"].given_up_at + 10 * after
    assert another_round(db, TAXON, later, after, 1) == 0  # its rounds are used up
    run = lab.accessions.load()["ERR0000001"]
    assert run.excluded and run.exclusion_reason.startswith("failed_attempts: 2 attempts failed")
    assert run.attempts == 2  # content failures count; the round gave fresh attempts once
