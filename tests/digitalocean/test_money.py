"""Droplets that never double or leak, played in-process against the DigitalOcean stand-in.

Each test is a way money leaks in production (an answer lost after the droplet was made, a
crash before the id was saved, a second installation on the same account, a firewall left
behind, a runner started before its tools were there) and ends by reading the stand-in's ledger.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import responses

from backend.compute.base import Chunk, ChunkRun, prepare_folder
from backend.compute.cloudinit import bootstrap_marker
from backend.compute.digitalocean import DigitalOceanBackend
from backend.compute.do_api import MAX_RETRY_AFTER, DoApi, QuotaReached
from backend.compute.do_tags import install_id
from backend.demo.do_standin import DoStandIn
from backend.errors import OperationError
from backend.jobs.reconcile import reconcile
from backend.settings import Settings, load_settings
from backend.state.registry import Registry
from backend.state.workers import WorkerRecord, WorkerStore, new_token, token_hash, worker_name
from backend.timeutil import utc_now

from .conftest import wait_for

API = "https://api.digitalocean.com/v2"


class Crash(BaseException):
    """The process dies here (not an error anything may catch)."""


@pytest.fixture
def stalling_url() -> Iterator[str]:
    """A URL whose server accepts and never answers: a runner started on it keeps running."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}/vol1/ERR1_1.fastq.gz"


@pytest.fixture
def home(as_root, standin, user_key, stalling_url, tmp_path) -> Callable[..., Home]:
    """Make a home (data folder, store, backend) on the stand-in; several may share it."""

    def make(install: str = "lab-a", **env: str) -> Home:
        data = tmp_path / install
        settings = load_settings(standin.settings_env() | {
            "MICROFETCH_DATA_DIR": str(data), "MICROFETCH_CSV": str(data / "m.csv"),
            "MICROFETCH_INSTALL_ID": install, "MICROFETCH_DO_SSH_KEYS": str(user_key[1]),
            "MICROFETCH_DO_SSH_PRIVATE_KEY": str(user_key[0]),
            "MICROFETCH_SSH_CONNECT_TIMEOUT": "2", "MICROFETCH_SSH_BOOT_SECONDS": "20",
            "MICROFETCH_DO_LIST_LAG_SECONDS": "5", **env})
        return Home(settings, DigitalOceanBackend(settings, poll_seconds=0.2), stalling_url)

    return make


class Home:
    """One installation: its settings, worker records and backend."""

    def __init__(self, settings: Settings, backend: DigitalOceanBackend, url: str) -> None:
        self.settings, self.backend, self.url = settings, backend, url
        self.store = WorkerStore.of(settings)
        self.registry = Registry.from_settings(settings)

    def claim(self, taxon: int = 562) -> tuple[WorkerRecord, Path]:
        """What dispatch does before it asks the backend: the record and the folder."""
        token = new_token()
        chunk = self.store.next_chunk(taxon)
        record = WorkerRecord(name=worker_name(taxon, chunk), backend="digitalocean",
                              taxon_id=taxon, chunk=chunk, runs=["ERR1"], bytes=100,
                              token_sha256=token_hash(token), created_at=utc_now())
        self.store.create(record)
        spec = Chunk(taxon, chunk, (ChunkRun("ERR1", (self.url,), ("0" * 32,), (100,)),))
        assert self.settings.pipeline_dir is not None
        folder = prepare_folder(self.settings.data_dir / "outbox" / record.name, spec, token,
                                "", self.settings.pipeline_dir)
        return record, folder

    def start(self, taxon: int = 562) -> WorkerRecord:
        record, folder = self.claim(taxon)
        return self.backend.start(record, folder, self.store.save)

    def reap(self) -> list[str]:
        """`microfetch workers reap`: a reconciliation with no grace period."""
        return reconcile(self.settings, self.backend, self.store, self.registry, utc_now(),
                         grace=0).destroyed


def creates(standin: DoStandIn) -> int:
    return sum(1 for r in standin.requests if (r["method"], r["path"]) == ("POST", "/v2/droplets"))


def live_ids(standin: DoStandIn) -> set[int]:
    return {e.id for e in standin.cloud.entries if e.destroyed_at is None}


def test_an_unclear_answer_to_a_create_is_found_by_its_tag_and_never_sent_again(home, standin):
    lab = home()
    standin.cloud.fail_create("504")  # a dropped connection: through `serve`, in test_money_serve
    standin.cloud.lag_listing(1.5)  # the listing shows the droplet only a while later

    record = lab.start()

    assert creates(standin) == 1
    assert live_ids(standin) == {record.droplet_id}
    assert lab.store.get(record.name).droplet_id == record.droplet_id
    assert lab.reap() == []  # the one droplet is the worker's own


def test_a_droplet_listed_only_after_the_search_gave_up_is_destroyed_as_a_duplicate(
        home, standin):
    lab = home(MICROFETCH_DO_LIST_LAG_SECONDS="1")
    standin.cloud.fail_create("drop")
    standin.cloud.lag_listing(4.0)  # longer than home looks for it: home creates again

    record = lab.start()
    lost = (live_ids(standin) - {record.droplet_id}).pop()
    wait_for(lambda: str(lost) in {w.backend_id for w in lab.backend.list_live()},
             what="the late listing")

    assert creates(standin) == 2
    assert lab.reap() == [record.name]  # the other droplet of this worker
    assert live_ids(standin) == {record.droplet_id}
    assert standin.cloud.destroyed[lost].name == record.name


def test_a_crash_between_create_and_saving_the_id_is_adopted_on_restart(home, standin):
    lab = home()
    record, folder = lab.claim()

    def save_then_die(saved: WorkerRecord) -> None:
        if saved.droplet_id is not None:
            raise Crash  # the create succeeded; its id never reaches the database
        lab.store.save(saved)

    with pytest.raises(Crash):
        lab.backend.start(record, folder, save_then_die)
    (made,) = live_ids(standin)
    restarted = home()  # a new process: the same data folder and install
    saved = restarted.store.get(record.name)
    assert saved.droplet_id is None and saved.host_key  # what the crash left

    started = restarted.backend.start(saved, folder, restarted.store.save)

    assert started.droplet_id == made and creates(standin) == 1
    assert restarted.reap() == [] and live_ids(standin) == {made}


def test_two_installations_on_one_account_never_reap_each_other(home, standin, api):
    staging, production = home("staging"), home("production")
    mine, theirs = staging.start(), production.start(taxon=1280)
    # From before install ids (no install tag): one that production's records name, and one
    # nobody names (another installation's, perhaps).
    old_name, stranger_name = "mf-1280-9-abcdef", "mf-7-0-aaaaaa"
    old, stranger = (api.create(name=name, region="lon1", size="s-1vcpu-1gb",
                                image="debian-12-x64", ssh_keys=[], tags=["microfetch"],
                                user_data="#cloud-config\n{}\n")
                     for name in (old_name, stranger_name))
    production.store.create(WorkerRecord(
        name=old_name, backend="digitalocean", taxon_id=1280, chunk=9, runs=[], bytes=0,
        token_sha256="", created_at=utc_now(), droplet_id=old))

    assert staging.reap() == [] and production.reap() == []

    assert live_ids(standin) == {mine.droplet_id, theirs.droplet_id, old, stranger}
    assert {w.name for w in staging.backend.list_live()} == {mine.name}
    assert {w.name for w in production.backend.list_live()} == {theirs.name, old_name}


def test_the_runner_starts_only_after_the_user_data_has_finished(home, standin):
    lab = home()
    standin.cloud.late_bootstrap(2.0)  # SSH answers two seconds before runcmd has run

    record = lab.start()

    marker = Path(bootstrap_marker(record.name))
    wait_for(lambda: (Path(record.remote_dir) / "run_chunk.pid").exists(), what="the runner")
    started = (Path(record.remote_dir) / "run_chunk.pid").stat().st_mtime_ns
    assert marker.stat().st_mtime_ns <= started


def test_user_data_that_never_finishes_is_given_up_after_the_bounded_wait(home, standin):
    lab = home(MICROFETCH_DO_BOOTSTRAP_SECONDS="1")
    standin.cloud.late_bootstrap(60.0)
    record, folder = lab.claim()

    with pytest.raises(OperationError, match="did not finish within 1 s") as caught:
        lab.backend.start(record, folder, lab.store.save)

    assert "cloud-init:" in str(caught.value)  # its status, as extra information
    assert not (Path(record.remote_dir) / "run_chunk.pid").exists()


def test_a_droplet_without_the_pinned_nextflow_is_refused_before_its_runner_starts(
        home, standin):
    lab = home(MICROFETCH_NEXTFLOW_VERSION="25.10.0")  # the stand-in installs no Nextflow
    record, folder = lab.claim()

    with pytest.raises(OperationError, match="does not answer") as caught:
        lab.backend.start(record, folder, lab.store.save)

    assert "nextflow" in str(caught.value) and "NXF_VER=25.10.0" in str(caught.value)
    assert "python3" not in str(caught.value) and "rsync" not in str(caught.value)
    assert not (Path(lab.store.get(record.name).remote_dir) / "run_chunk.pid").exists()


def test_the_ssh_firewall_comes_with_the_first_droplet_and_goes_with_the_last(home, standin):
    lab = home(MICROFETCH_DO_SSH_FROM="127.0.0.0/8")
    first, second = lab.start(), lab.start()

    (firewall,) = standin.cloud.firewalls.values()
    assert firewall["name"] == "microfetch-lab-a" and firewall["tags"] == ["mf-install-lab-a"]
    assert firewall["inbound_rules"] == [{"protocol": "tcp", "ports": "22",
                                          "sources": {"addresses": ["127.0.0.0/8"]}}]
    lab.backend.destroy(first)
    assert len(standin.cloud.firewalls) == 1  # the second droplet still needs it
    lab.backend.destroy(second)
    assert standin.cloud.firewalls == {}
    assert live_ids(standin) == set()


def test_the_droplet_limit_lowers_the_free_slots_and_a_422_waits_without_parking(
        home, standin, api):
    lab = home(MICROFETCH_MAX_WORKERS="5", MICROFETCH_DO_LIMIT_WAIT_SECONDS="1")
    standin.cloud.droplet_limit = 3
    api.create(name="somebody-else", region="lon1", size="s-1vcpu-1gb", image="debian-12-x64",
               ssh_keys=[], tags=[], user_data="")  # the account's other droplets count too
    assert lab.backend.slots([]) == 2
    standin.cloud.fail_create("422")
    record, folder = lab.claim()

    with pytest.raises(QuotaReached) as refused:
        lab.backend.start(record, folder, lab.store.save)

    assert not refused.value.permanent  # dispatch gives the runs back; nothing is parked
    assert lab.backend.slots([]) == 0
    wait_for(lambda: lab.backend.slots([]) == 2, what="the limit wait to pass")
    assert lab.start().droplet_id in live_ids(standin)


def test_the_install_id_is_made_once_and_kept(tmp_path):
    settings = load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data")})
    first = install_id(settings)
    assert first == install_id(settings) == (tmp_path / "data" / "install_id").read_text().strip()
    assert install_id(settings.with_overrides(install_id="lab-prod")) == "lab-prod"


@responses.activate
@pytest.mark.parametrize(("headers", "slept"), [
    ({"ratelimit-reset": "soon"}, MAX_RETRY_AFTER / 4),
    ({"Retry-After": "-5"}, 0.0),
    ({"Retry-After": "nan"}, MAX_RETRY_AFTER / 4),
    ({"Retry-After": "86400"}, MAX_RETRY_AFTER),
])
def test_a_malformed_or_huge_retry_header_becomes_a_bounded_wait(headers, slept):
    sleeps: list[float] = []
    responses.get(f"{API}/droplets/7", status=429, headers=headers, json={"id": "x",
                                                                        "message": "slow"})
    responses.get(f"{API}/droplets/7", status=404, json={"id": "not_found", "message": "no"})
    assert DoApi("t", 5, sleep=sleeps.append, retries=1).get(7) is None
    assert sleeps == [slept]


@responses.activate
def test_no_request_is_sent_while_the_rate_limit_window_is_spent():
    sleeps: list[float] = []
    api = DoApi("t", 5, sleep=sleeps.append, retries=0)
    api.policy.clock = lambda: 1_000_000.0
    responses.get(f"{API}/droplets/7", status=404, json={"id": "not_found", "message": "no"},
                  headers={"ratelimit-remaining": "0", "ratelimit-reset": "1000042"})

    api.get(7)
    api.get(7)

    assert sleeps == [42.0]  # the second request waited for the reset
    assert len(responses.calls) == 2


def test_the_standin_answers_account_and_droplet_count_as_the_quota_reads_them(standin, api):
    answer = requests.get(f"{standin.api_url}/account", timeout=5, headers={
        "Authorization": f"Bearer {standin.cloud.token}"})
    assert answer.json()["account"]["droplet_limit"] == api.droplet_limit() == 25
    assert api.droplet_count() == 0
