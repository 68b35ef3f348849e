"""`microfetch serve` on the digitalocean backend when the cloud misbehaves, against the stand-ins.

One taxon of four runs in two chunks (two droplets at most). Each test plays one fault through
the real daemon and ends with the taxon complete and the ledger sound: no live droplet without
a live worker, never more droplets at once than allowed, and one droplet per worker.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.demo.do_standin import Cloud, DoStandIn
from backend.demo.do_standin.ledger import LedgerEntry
from backend.demo.ena_standin import EnaData, EnaStandIn, make_run
from backend.settings import load_settings
from backend.state.workers import WorkerStore
from tests.conftest import cli_env
from tests.daemon.conftest import Daemon
from tests.loopback import free_port
from tests.sshd import keygen

TAXON = 562
CAP = 2  # MICROFETCH_MAX_WORKERS


@pytest.fixture
def cloud_lab(tmp_path: Path, as_root: None) -> Iterator[tuple[Daemon, DoStandIn]]:
    data = EnaData()
    data.names[TAXON] = "Escherichia coli"
    for i in range(1, 5):
        make_run(data, TAXON, f"ERR{5620000 + i}", reads=300)
    ena = EnaStandIn(data).start()
    cloud = DoStandIn(Cloud(activation_seconds=0.3, folder=tmp_path / "cloud")).start()
    key = cloud.cloud.add_ssh_key(keygen(tmp_path / "id_ed25519"))
    port = free_port()
    env = cli_env(tmp_path, **ena.settings_env(), **cloud.settings_env(),
                  MICROFETCH_DO_SSH_KEYS=str(key["id"]),
                  MICROFETCH_DO_SSH_PRIVATE_KEY=str(tmp_path / "id_ed25519"),
                  MICROFETCH_DO_CREATE_TIMEOUT="60", MICROFETCH_SSH_BOOT_SECONDS="20",
                  MICROFETCH_SSH_CONNECT_TIMEOUT="5", MICROFETCH_DO_BOOTSTRAP_SECONDS="30",
                  MICROFETCH_DO_LIST_LAG_SECONDS="10", MICROFETCH_DO_LIMIT_WAIT_SECONDS="2",
                  MICROFETCH_BIND=f"127.0.0.1:{port}",
                  MICROFETCH_CALLBACK_URL=f"http://127.0.0.1:{port}",
                  MICROFETCH_HEARTBEAT_SECONDS="1", MICROFETCH_COLLECT_SECONDS="1",
                  MICROFETCH_RECONCILE_SECONDS="2", MICROFETCH_CHUNK_MAX_RUNS="2",
                  MICROFETCH_MAX_WORKERS=str(CAP), MICROFETCH_ENA_RETRIES="1",
                  MICROFETCH_SHUTDOWN_GRACE_SECONDS="10", MICROFETCH_ORPHAN_GRACE_SECONDS="60")
    lab = Daemon(tmp_path, env, ena)
    assert lab.cli(str(TAXON), add_taxa=True).returncode == 0
    yield lab, cloud
    if lab.proc and lab.proc.poll() is None:
        lab.proc.kill()
        lab.proc.wait(timeout=30)
    cloud.stop()
    ena.stop()


def most_at_once(entries: list[LedgerEntry]) -> int:
    """The most droplets alive together (a destroy and a create in one instant: destroy first)."""
    events = sorted([(e.created_at, 1) for e in entries]
                    + [(e.destroyed_at, -1) for e in entries if e.destroyed_at])
    alive = most = 0
    for _, change in events:
        alive += change
        most = max(most, alive)
    return most


def finish(lab: Daemon, cloud: DoStandIn, cap: int = CAP) -> WorkerStore:
    """Wait for the taxon, stop serve, and check the ledger against the worker records."""
    lab.wait_until(lambda: lab.all_complete(TAXON), 90)
    assert lab.signal(signal.SIGTERM) == 0
    assert lab.genomes() == lab.expected(TAXON)
    store = WorkerStore.of(load_settings(lab.env))
    records = [r for r in store.all() if r.backend == "digitalocean"]
    made = [r for r in records if r.droplet_id is not None]
    book = cloud.cloud.ledger()
    assert book["live"] == []  # no live droplet without a live worker (none is live)
    assert sorted(d["id"] for d in book["droplets"]) == sorted(r.droplet_id for r in made)
    assert most_at_once(cloud.cloud.entries) <= cap
    assert not lab.rows()[TAXON]["needs_attention"]  # nothing was parked
    return store


def test_a_504_and_a_dropped_connection_after_create_make_one_droplet_per_worker(cloud_lab):
    lab, cloud = cloud_lab
    cloud.cloud.fail_create("504")
    cloud.cloud.fail_create("drop")
    cloud.cloud.lag_listing(2.0, count=2)  # and the listings show them late

    lab.start()
    store = finish(lab, cloud)

    assert "looking for it by its tag" in lab.log()
    assert "adopted droplet" in lab.log()
    records = store.all()
    posts = [r for r in cloud.requests if (r["method"], r["path"]) == ("POST", "/v2/droplets")]
    assert len(posts) == len(records) == len(cloud.cloud.entries) == 2


def test_serve_killed_between_create_and_record_leaves_no_orphan_after_restart(cloud_lab):
    lab, cloud = cloud_lab
    cloud.cloud.delay_answer(60.0)  # the droplet is made, its answer is late: kill meanwhile

    lab.start()
    lab.wait_until(lambda: len(cloud.cloud.entries) == 1, 30)
    lab.proc.kill()
    lab.proc.wait(timeout=30)
    (left,) = WorkerStore.of(load_settings(lab.env)).live()
    assert left.droplet_id is None and left.host_key  # the crash came before the id was saved
    lab.start()
    store = finish(lab, cloud)

    assert store.get(left.name).droplet_id == cloud.cloud.entries[0].id  # adopted, not redone
    assert len(cloud.cloud.entries) == len(store.all()) == 2


def test_the_droplet_limit_holds_workers_back_and_the_taxon_still_finishes(cloud_lab):
    lab, cloud = cloud_lab
    cloud.cloud.droplet_limit = 1
    cloud.cloud.fail_create("422")  # and the first create is refused for the limit anyway
    # And no callback ever arrives (a lab behind NAT): the collector finds DONE.json itself.
    lab.env["MICROFETCH_CALLBACK_URL"] = f"http://127.0.0.1:{free_port()}"

    lab.start()
    store = finish(lab, cloud, cap=1)
    assert [r.callback for r in store.all()] == [None, None, None]

    log = lab.log()
    assert log.count("no new droplet for") == 1  # one line says it, not one a heartbeat
    assert "exceed your droplet limit" in log
    assert len([r for r in store.all() if r.droplet_id]) == 2


def test_a_droplet_rebooted_mid_chunk_is_found_and_its_runs_given_back(cloud_lab):
    lab, cloud = cloud_lab
    ena = lab.ena
    downloading, go_on = threading.Event(), threading.Event()
    real_fault: Callable[[str], str] = ena.next_fault

    def held(endpoint: str) -> str:  # the first download waits: the runner is mid-chunk
        if endpoint == "files" and not go_on.is_set():
            downloading.set()
            go_on.wait(60)
        return real_fault(endpoint)

    ena.next_fault = held  # type: ignore[method-assign]
    lab.start()
    assert downloading.wait(60), lab.log()
    busy = next(d for d in list(cloud.cloud.droplets.values())
                if Path(f"/srv/microfetch/{d.name}/run_chunk.pid").exists())
    cloud.cloud.reboot(busy.id)
    lab.wait_until(lambda: busy.id in cloud.cloud.destroyed, 30)
    go_on.set()
    store = finish(lab, cloud)

    assert "stopped before it finished" in lab.log()
    assert len(store.all()) == 3  # the lost chunk went to a new droplet
