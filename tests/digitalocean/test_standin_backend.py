"""The digitalocean backend meets a stand-in droplet's failures: a reboot and a death mid-run.

The backend is built from settings alone (``MICROFETCH_DO_API_URL`` names the stand-in), starts
a real chunk runner on the droplet, and must tell what happened to it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.compute.base import Chunk, ChunkRun, WorkerState, prepare_folder
from backend.compute.digitalocean import DigitalOceanBackend
from backend.errors import OperationError
from backend.settings import load_settings
from backend.state.workers import WorkerRecord, new_token, token_hash, worker_name
from backend.timeutil import utc_now

from .conftest import wait_for


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """A URL whose server accepts and never answers: the runner waits on it, running."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}/vol1/ERR1_1.fastq.gz"


@pytest.fixture
def running(as_root, standin, user_key, stalling_server, tmp_path):
    """A droplet started by the backend, its runner waiting on a download."""
    settings = load_settings(standin.settings_env() | {
        "MICROFETCH_DATA_DIR": str(tmp_path / "data"), "MICROFETCH_CSV": str(tmp_path / "m.csv"),
        "MICROFETCH_DO_SSH_KEYS": str(user_key[1]),
        "MICROFETCH_DO_SSH_PRIVATE_KEY": str(user_key[0]),
        "MICROFETCH_SSH_CONNECT_TIMEOUT": "2", "MICROFETCH_SSH_BOOT_SECONDS": "20"})
    backend = DigitalOceanBackend(settings, poll_seconds=0.1)
    token = new_token()
    record = WorkerRecord(name=worker_name(562, 0), backend="digitalocean", taxon_id=562,
                          chunk=0, runs=["ERR1"], bytes=100, token_sha256=token_hash(token),
                          created_at=utc_now())
    chunk = Chunk(562, 0, (ChunkRun("ERR1", (stalling_server,), ("0" * 32,), (100,)),))
    assert settings.pipeline_dir is not None
    folder = prepare_folder(tmp_path / "outbox" / record.name, chunk, token, "",
                            settings.pipeline_dir)
    record = backend.start(record, folder, lambda r: None)
    wait_for(lambda: backend.status(record) is WorkerState.RUNNING, what="the runner")
    yield backend, record
    backend.destroy(record)


def test_a_droplet_rebooted_mid_run_is_reported_gone(running, standin):
    backend, record = running

    standin.cloud.reboot(record.droplet_id)

    assert backend.status(record) is WorkerState.GONE  # sshd is back, the runner is not


def test_a_dead_droplet_is_unreachable_though_the_api_lists_it(running, standin):
    backend, record = running

    standin.cloud.kill(record.droplet_id)

    assert [w.name for w in backend.list_live()] == [record.name]
    with pytest.raises(OperationError, match="cannot reach"):
        backend.status(record)


def test_runs_already_home_are_removed_from_the_droplet_and_no_others(running):
    backend, record = running
    out = Path(record.remote_dir) / "out"
    for run in ("ERR1000001", "ERR1000002"):
        (out / run).mkdir(parents=True)
        (out / run / f"{run}_1.fastq.gz").write_bytes(b"reads")

    backend.remove_runs(record, ["ERR1000001", "../ERR1000002", "ERR1000002\n"])

    assert sorted(p.name for p in out.iterdir() if p.name.startswith("ERR")) == ["ERR1000002"]


def test_destroying_the_worker_stops_the_droplet_and_the_bill(running, standin):
    backend, record = running

    backend.destroy(record)

    assert backend.list_live() == []
    assert not Path(record.remote_dir).exists()
    book = standin.cloud.ledger()
    assert (book["created"], book["destroyed"], book["billed_hours"]) == (1, 1, 1)
