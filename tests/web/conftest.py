"""The app built by create_app on a temp registry, with one taxon and one running worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from waitress.server import create_server

from backend.settings import Settings, load_settings
from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.metrics import DaemonStatus
from backend.state.registry import Registry, Stage, Status, Taxon
from backend.state.workers import Phase, WorkerRecord, WorkerStore, token_hash
from backend.timeutil import utc_now
from web import create_app

TOKEN = "worker-token"
ADMIN = "admin-token-for-tests"
WORKER = "mf-562-0-abcdef"


@dataclass
class Site:
    app: Flask
    client: FlaskClient
    settings: Settings
    registry: Registry
    store: WorkerStore
    daemon: DaemonStatus
    woken: list[str]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    settings = load_settings({"MICROFETCH_CSV": str(tmp_path / "microfetch.csv"),
                              "MICROFETCH_DATA_DIR": str(tmp_path / "data"),
                              "MICROFETCH_ADMIN_TOKEN": ADMIN})
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("test") as table:
        table[562] = Taxon(562, "Escherichia coli", stage=Stage.WAIT,
                           last_run_status=Status.IN_PROGRESS, droplet_ips=("127.0.0.1",))
    store = WorkerStore.of(settings)
    store.create(WorkerRecord(name=WORKER, backend="local", taxon_id=562, chunk=0,
                              runs=["ERR1000001"], bytes=100, token_sha256=token_hash(TOKEN),
                              created_at=utc_now(), phase=Phase.RUNNING, address="127.0.0.1"))
    daemon = DaemonStatus(heartbeat_seconds=60)
    woken: list[str] = []
    app = create_app(settings, daemon=daemon, on_callback=woken.append)
    app.config["TESTING"] = True
    return Site(app, app.test_client(), settings, registry, store, daemon, woken)


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a loopback port with waitress (as `microfetch serve` runs it); its base URL."""
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)


def three_runs(site: Site) -> None:
    """Taxon 562's runs: one fetched (30 bytes), one pending (5), one excluded."""
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1000001"] = Run("ERR1000001", status=RunStatus.FETCHED, fastq_bytes=(10, 20),
                                 fetched_at=utc_now())
        runs["ERR1000002"] = Run("ERR1000002", fastq_bytes=(5,))
        runs["ERR1000003"] = Run("ERR1000003")
        runs["ERR1000003"].exclude(Exclusion.PLATFORM, "LS454 is not ILLUMINA")
