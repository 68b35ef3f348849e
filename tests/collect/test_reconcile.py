"""The reconciler on the local backend: orphans, vanished workers, old workers."""

from __future__ import annotations

import shutil
from datetime import timedelta

from backend.jobs.reconcile import reconcile
from backend.state.accessions import RunStatus
from backend.state.workers import Phase
from backend.timeutil import utc_now

from .conftest import TAXON


def test_a_live_worker_without_a_record_is_destroyed_after_the_grace_period(lab):
    orphan = lab.backend.root / "mf-562-7-abcdef"
    orphan.mkdir(parents=True)
    now = utc_now()
    kept = reconcile(lab.settings, lab.backend, lab.store, lab.registry, now, grace=3600)
    assert kept.destroyed == [] and orphan.exists()
    report = reconcile(lab.settings, lab.backend, lab.store, lab.registry,
                       now + timedelta(hours=2), grace=3600)
    assert report.destroyed == ["mf-562-7-abcdef"]
    assert not orphan.exists()


def test_a_record_whose_worker_vanished_is_closed_and_its_runs_return(lab):
    record = lab.finished_worker(lab.add_runs("ERR0000001", "ERR0000002"))
    shutil.rmtree(lab.backend.folder(record))
    report = reconcile(lab.settings, lab.backend, lab.store, lab.registry, utc_now())
    assert report.closed == [record.name]
    assert lab.store.get(record.name).phase is Phase.DESTROYED
    runs = lab.accessions.load()
    assert {r.status for r in runs.values()} == {RunStatus.PENDING}
    assert lab.registry.get(TAXON).droplet_ips == ()


def test_a_worker_older_than_the_limit_needs_attention_once(lab):
    record = lab.finished_worker(lab.add_runs("ERR0000001"))
    later = utc_now() + timedelta(hours=lab.settings.worker_max_age_hours + 1)
    report = reconcile(lab.settings, lab.backend, lab.store, lab.registry, later)
    assert report.flagged == [record.name]
    assert f"worker {record.name} is older than 48 h" in lab.registry.get(TAXON).needs_attention
    again = reconcile(lab.settings, lab.backend, lab.store, lab.registry, later)
    assert again.flagged == []


def test_workers_destroy_and_reap_act_at_once_for_a_person(lab, run_cli, tmp_path):
    from tests.conftest import cli_env

    env = cli_env(tmp_path, MICROFETCH_DATA_DIR=str(lab.settings.data_dir))
    record = lab.finished_worker(lab.add_runs("ERR0000001"))
    result = run_cli("workers", "destroy", record.name, env=env)
    assert result.returncode == 0, result.stderr
    assert "its unfetched runs are pending again" in result.stdout
    assert not lab.backend.folder(record).exists()
    assert lab.accessions.load()["ERR0000001"].status is RunStatus.PENDING
    assert run_cli("workers", "destroy", "mf-562-9-999999", env=env).returncode == 2

    (lab.backend.root / "mf-562-8-abcdef").mkdir(parents=True)
    result = run_cli("workers", "reap", env=env)
    assert result.returncode == 0
    assert "destroyed orphan mf-562-8-abcdef" in result.stdout
