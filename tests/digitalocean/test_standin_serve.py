"""The whole loop through `microfetch serve` on the digitalocean backend, against the stand-ins.

Three taxa, one droplet per chunk: each droplet is created through the API, reached with the
host key microfetch pinned before it existed, sent its chunk, runs the chunk runner (which
fetches from the ENA stand-in and calls home), is pulled home with rsync, verified and
destroyed. The ledger then shows every droplet destroyed and no more droplet-hours than the
daemon lived.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.demo.do_standin import Cloud, DoStandIn
from backend.demo.ena_standin import EnaData, EnaStandIn, make_run
from backend.settings import load_settings
from backend.state.workers import Phase, WorkerStore
from backend.timeutil import parse_time, utc_now
from tests.conftest import cli_env
from tests.daemon.conftest import Daemon, runner_processes
from tests.loopback import free_port
from tests.sshd import keygen

TAXA = {562: "Escherichia coli", 1280: "Staphylococcus aureus", 1639: "Listeria monocytogenes"}


@pytest.fixture
def cloud_lab(tmp_path: Path, as_root: None) -> Iterator[tuple[Daemon, DoStandIn]]:
    data = EnaData()
    data.names.update(TAXA)
    for i in range(1, 5):
        make_run(data, 562, f"ERR{5620000 + i}", reads=300)
    for i in range(1, 3):
        make_run(data, 1280, f"SRR{12800000 + i}", files=3, reads=300)
        make_run(data, 1639, f"ERR{16390000 + i}", reads=300)
    make_run(data, 1280, "SRR12809999", platform="PACBIO_SMRT", files=1)
    ena = EnaStandIn(data).start()
    cloud = DoStandIn(Cloud(activation_seconds=0.3, folder=tmp_path / "cloud"),
                      max_per_page=2).start()
    key = cloud.cloud.add_ssh_key(keygen(tmp_path / "id_ed25519"))
    port = free_port()
    env = cli_env(tmp_path, **ena.settings_env(), **cloud.settings_env(),
                  MICROFETCH_DO_SSH_KEYS=key["fingerprint"],
                  MICROFETCH_DO_SSH_PRIVATE_KEY=str(tmp_path / "id_ed25519"),
                  MICROFETCH_DO_CREATE_TIMEOUT="60", MICROFETCH_SSH_BOOT_SECONDS="20",
                  MICROFETCH_SSH_CONNECT_TIMEOUT="5",
                  MICROFETCH_BIND=f"127.0.0.1:{port}",
                  MICROFETCH_CALLBACK_URL=f"http://127.0.0.1:{port}",
                  MICROFETCH_HEARTBEAT_SECONDS="1", MICROFETCH_COLLECT_SECONDS="1",
                  MICROFETCH_RECONCILE_SECONDS="5", MICROFETCH_CHUNK_MAX_RUNS="2",
                  MICROFETCH_MAX_WORKERS="3", MICROFETCH_ENA_RETRIES="1",
                  MICROFETCH_SHUTDOWN_GRACE_SECONDS="10", MICROFETCH_ORPHAN_GRACE_SECONDS="60")
    lab = Daemon(tmp_path, env, ena)
    yield lab, cloud
    if lab.proc and lab.proc.poll() is None:
        lab.proc.kill()
        lab.proc.wait(timeout=30)
    cloud.stop()
    ena.stop()


def test_three_taxa_go_through_droplets_that_are_all_destroyed_and_billed(cloud_lab):
    lab, cloud = cloud_lab
    assert lab.cli(*map(str, TAXA), add_taxa=True).returncode == 0
    started = utc_now()
    lab.start()

    lab.wait_until(lambda: lab.all_complete(*TAXA), 80)
    assert lab.signal(signal.SIGTERM) == 0
    ended = utc_now()

    assert lab.genomes() == lab.expected(*TAXA)  # uploaded, run, rsynced and verified
    store = WorkerStore.of(load_settings(lab.env))
    records = [r for r in store.all() if r.backend == "digitalocean"]
    assert len(records) == 4  # 562 in two chunks of two runs, 1280 and 1639 in one each
    entries = {d["id"]: d for d in cloud.cloud.ledger()["droplets"]}
    for record in records:
        droplet = cloud.cloud.destroyed[record.droplet_id]  # created and destroyed via the API
        # claimed before acting: the record existed before the droplet did
        assert parse_time(entries[record.droplet_id]["created_at"]) >= \
            record.created_at.replace(microsecond=0)
        assert droplet.name == record.name
        assert droplet.machine.plan.host_public == record.host_key  # the pin is its key
        assert f"mkdir -p /srv/microfetch/{record.name}" in droplet.machine.ran
        assert record.callback is not None and record.callback["status"] == "done"
        assert record.phase is Phase.DESTROYED
    book = cloud.cloud.ledger()
    assert (book["created"], book["destroyed"], book["live"]) == (4, 4, [])
    for entry in book["droplets"]:  # the ledger's times are whole seconds, its hours exact
        life = parse_time(entry["destroyed_at"]) - parse_time(entry["created_at"])
        assert abs(entry["hours"] * 3600 - life.total_seconds()) <= 1
        assert 0 < entry["hours"] * 3600 <= (ended - started).total_seconds()
    assert book["hours"] == pytest.approx(sum(d["hours"] for d in book["droplets"]))
    assert book["billed_hours"] == 4  # each droplet lived seconds: one hour each
    assert not [r.name for r in records if Path(f"/srv/microfetch/{r.name}").exists()]
    assert not [pid for r in records for pid in runner_processes(Path(r.name))]
