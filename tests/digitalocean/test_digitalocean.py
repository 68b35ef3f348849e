"""The DigitalOcean backend through `responses`, fed with the recorded API bodies."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import responses
import yaml
from loguru import logger

from backend.compute import costs
from backend.compute.cloudinit import (
    generate_host_key,
    launcher_url,
    nextflow_script,
    render_user_data,
)
from backend.compute.digitalocean import (
    DigitalOceanBackend,
    product_packages,
    startup_problems,
    startup_warnings,
)
from backend.compute.do_api import DoApi
from backend.compute.do_tags import key_tag
from backend.errors import OperationError
from backend.jobs.reconcile import reconcile
from backend.preflight import preflight
from backend.settings import load_settings
from backend.state.accessions import RunStatus
from backend.state.workers import Phase, WorkerRecord
from backend.timeutil import format_time, utc_now

from ..collect.conftest import TAXON

ANCHORS = Path(__file__).resolve().parents[1] / "data" / "digitalocean"
API = "https://api.digitalocean.com/v2"


def anchor(name: str) -> dict:
    return json.loads((ANCHORS / name).read_text())


INSTALL = "lab"  # the install id of `do_lab`


def droplet(droplet_id: int, name: str, status: str = "active", ip: str = "203.0.113.7",
            created: str = "2026-11-23T09:00:00Z", install: str | None = INSTALL) -> dict:
    """A droplet as the API shows it; ``install=None`` is one made before install ids."""
    body = copy.deepcopy(anchor("droplet_get_single.json"))
    tags = ["microfetch"] + ([f"mf-install-{install}"] if install else [])
    body["droplet"].update(id=droplet_id, name=name, status=status, created_at=created,
                           tags=tags)
    body["droplet"]["networks"]["v4"][0]["ip_address"] = ip
    if status != "active":
        body["droplet"]["networks"] = {"v4": [], "v6": []}
    return body


def tagged(*droplets: dict) -> dict:
    body = copy.deepcopy(anchor("droplets_list_bytag_paginated.json"))
    body["droplets"] = [d["droplet"] for d in droplets]
    body["links"] = {}
    return body


@pytest.fixture
def do_lab(lab, tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not used by these tests")
    lab.settings = lab.settings.with_overrides(
        backend="digitalocean", do_token="secret", do_ssh_keys=("12345",),
        do_ssh_private_key=key, do_size="1gb", max_workers=2, do_daily_spend_cap=20.0,
        install_id=INSTALL)
    sleeps: list[float] = []
    api = DoApi("secret", 5, sleep=sleeps.append, retries=3)
    lab.backend = DigitalOceanBackend(lab.settings, api, poll_seconds=0, sleep=sleeps.append)
    lab.sleeps = sleeps
    responses.get(f"{API}/sizes/", json=anchor("sizes_list.json"))
    responses.get(f"{API}/account", json={"account": {"droplet_limit": 25}})
    yield lab
    # The records of a mocked cloud: nothing real to destroy (and no request may leave this
    # machine once the mock is gone), so they are closed before the lab destroys what is live.
    for live in lab.store.live():
        with lab.store.edit(live.name) as closed:
            closed.phase = Phase.DESTROYED


def record(lab, chunk: int = 0, **fields) -> WorkerRecord:
    values = dict(name=f"mf-562-{chunk}-abcdef", backend="digitalocean", taxon_id=TAXON,
                  chunk=chunk, runs=[], bytes=10**9, token_sha256="x", created_at=utc_now())
    values.update(fields)
    return WorkerRecord(**values)


@responses.activate
def test_a_droplet_is_created_with_the_contract_and_waited_for(do_lab):
    create = copy.deepcopy(anchor("droplet_create_response.json"))
    create["droplet"].update(id=3164494, name="mf-562-0-abcdef")
    responses.get(f"{API}/droplets/", json=tagged())
    responses.post(f"{API}/droplets/", json=create, status=202)
    responses.get(f"{API}/droplets/3164494", json=droplet(3164494, "mf-562-0-abcdef", "new"))
    responses.get(f"{API}/droplets/3164494", json=droplet(3164494, "mf-562-0-abcdef"))
    worker = record(do_lab)
    saved: list[dict] = []

    do_lab.backend._create(worker, lambda r: saved.append(r.to_json()))
    info = do_lab.backend._wait_active(worker)

    body = json.loads(next(c.request.body for c in responses.calls
                           if c.request.method == "POST"))
    assert body["name"] == "mf-562-0-abcdef"
    assert (body["region"], body["size"], body["image"]) == ("lon1", "1gb", "debian-12-x64")
    assert body["ssh_keys"] == [12345]
    install = do_lab.backend.install
    assert body["tags"] == ["microfetch", "microfetch-taxon-562", "microfetch-chunk-0",
                            "mf-worker-mf-562-0-abcdef", f"mf-install-{install}",
                            key_tag(worker.host_key)]
    assert body["user_data"].startswith("#cloud-config") and len(body["user_data"]) < 64 * 1024
    assert worker.droplet_id == 3164494 and info.ipv4 == "203.0.113.7"
    assert saved[0]["host_key"].startswith("ssh-ed25519 ") and saved[0]["droplet_id"] is None
    assert yaml.safe_load(body["user_data"])["ssh_keys"]["ed25519_public"] == worker.host_key


@responses.activate
def test_a_droplet_that_never_becomes_active_is_an_error_not_a_hang(do_lab):
    do_lab.settings = do_lab.settings.with_overrides(do_create_timeout=10)
    do_lab.backend.settings = do_lab.settings
    responses.get(f"{API}/droplets/77", json=droplet(77, "mf-562-0-abcdef", "new"))
    clock = iter(range(0, 100, 4))
    import backend.compute.digitalocean as module

    real = module.time.monotonic
    module.time.monotonic = lambda: float(next(clock))
    try:
        with pytest.raises(OperationError, match="not active with a public IPv4 after 10 s"):
            do_lab.backend._wait_active(record(do_lab, droplet_id=77))
    finally:
        module.time.monotonic = real


@responses.activate
def test_destroy_calls_the_api_and_an_already_gone_droplet_is_fine(do_lab):
    responses.delete(f"{API}/droplets/77", status=204)
    responses.delete(f"{API}/droplets/78", status=404, json={"id": "not_found",
                                                             "message": "not found"})
    do_lab.backend.destroy(record(do_lab, droplet_id=77))
    do_lab.backend.destroy(record(do_lab, droplet_id=78))
    assert [c.request.method for c in responses.calls] == ["DELETE", "DELETE"]


@responses.activate
def test_a_429_is_retried_after_the_time_the_api_asks_for(do_lab):
    responses.get(f"{API}/droplets/77", status=429, headers={"Retry-After": "7"},
                  json={"id": "too_many_requests", "message": "API Rate limit exceeded."})
    responses.get(f"{API}/droplets/77", json=droplet(77, "mf-562-0-abcdef"))
    assert do_lab.backend.api.get(77).status == "active"
    assert do_lab.sleeps == [7.0]


@responses.activate
def test_server_errors_are_retried_with_a_bound(do_lab):
    responses.get(f"{API}/droplets/77", status=503, body="<html>busy</html>")
    responses.get(f"{API}/droplets/77", json=droplet(77, "mf-562-0-abcdef"))
    assert do_lab.backend.api.get(77) is not None
    responses.get(f"{API}/droplets/88", status=500, body="oops")
    with pytest.raises(OperationError, match=r"did not answer after 4 tries \(HTTP 500\)"):
        do_lab.backend.api.get(88)


@responses.activate
def test_a_refused_token_says_what_to_set(do_lab):
    responses.get(f"{API}/droplets/", status=401, json=anchor("error_unauthorized.json"))
    with pytest.raises(OperationError, match="set DIGITALOCEAN_TOKEN") as caught:
        do_lab.backend.list_live()
    assert "Unable to authenticate you." in str(caught.value) and caught.value.permanent


@responses.activate
def test_the_worker_cap_and_the_daily_spend_cap_stop_new_droplets(do_lab):
    for chunk in range(2):
        do_lab.store.create(record(do_lab, chunk, name=f"mf-562-{chunk}-abcde{chunk}",
                                   phase=Phase.RUNNING, bytes=10**6))
    responses.get(f"{API}/droplets", json={"droplets": [], "links": {}, "meta": {"total": 3}})
    assert do_lab.backend.slots(do_lab.store.live()) == 0
    assert do_lab.backend.slots([]) == 2
    do_lab.store.create(record(do_lab, 5, name="mf-562-5-ffffff", bytes=5 * 10**12))
    spent = costs.spent_today(do_lab.store.all(), do_lab.backend.size(), utc_now(), 50, 0.01)
    assert spent >= 20.0
    assert do_lab.backend.slots([]) == 0


def test_the_estimate_counts_droplet_hours_and_outbound_transfer():
    size = {"price_hourly": 0.01488, "disk": 30, "transfer": 2}
    small = costs.estimate([10**9], size, fetch_mbps=50, egress_price_per_gib=0.01)
    assert small.hours == 1 and small.egress_cost == 0.0
    big = costs.estimate([400 * 10**9, 400 * 10**9], size, 50, 0.01)
    assert big.droplets == 2 and big.hours == 2 * 3
    assert big.egress_cost > big.droplet_cost  # moving raw FASTQ home costs more
    assert "droplet-hours" in big.text() and f"${big.total:.2f}" in big.text()


@responses.activate
def test_reconciliation_destroys_orphans_closes_vanished_and_flags_old(do_lab):
    contents = do_lab.add_runs("ERR0000001")
    old = record(do_lab, 1, name="mf-562-1-aaaaaa", droplet_id=101, phase=Phase.RUNNING,
                 created_at=utc_now() - timedelta(hours=60), address="203.0.113.1")
    vanished = record(do_lab, 2, name="mf-562-2-bbbbbb", droplet_id=102, phase=Phase.RUNNING,
                      runs=list(contents))
    do_lab.store.create(old)
    do_lab.store.create(vanished)
    with do_lab.accessions.edit() as runs:
        runs["ERR0000001"].status, runs["ERR0000001"].worker = RunStatus.ASSIGNED, vanished.name
    long_ago = format_time(utc_now() - timedelta(hours=2))
    responses.get(f"{API}/droplets/", json=tagged(droplet(101, old.name),
                                                  droplet(103, "mf-562-3-cccccc",
                                                          created=long_ago)))
    responses.delete(f"{API}/droplets/103", status=204)

    report = reconcile(do_lab.settings, do_lab.backend, do_lab.store, do_lab.registry,
                       utc_now())

    assert report.destroyed == ["mf-562-3-cccccc"]
    assert report.closed == [vanished.name]
    assert report.flagged == [old.name]
    assert do_lab.accessions.load()["ERR0000001"].status is RunStatus.PENDING
    assert "older than 48 h" in do_lab.registry.get(TAXON).needs_attention
    assert any(c.request.method == "DELETE" for c in responses.calls)


def test_startup_checks_refuse_what_a_droplet_could_not_use(lab, tmp_path):
    bare = lab.settings.with_overrides(backend="digitalocean")
    problems = " ".join(startup_problems(bare))
    for needed in ("DIGITALOCEAN_TOKEN", "MICROFETCH_DO_SSH_KEYS",
                   "MICROFETCH_DO_SSH_PRIVATE_KEY"):
        assert needed in problems
    key = tmp_path / "key"
    key.write_text("k")
    private = bare.with_overrides(do_token="t", do_ssh_keys=("ssh-rsa AAAA",),
                                  do_ssh_private_key=key)
    problems = " ".join(startup_problems(private))
    assert "give key ids or MD5 fingerprints" in problems
    good = private.with_overrides(do_ssh_keys=("12345", "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:"
                                                        "19:45:fa"),
                                  callback_url="https://microfetch.lab.example.org")
    assert startup_problems(good) == [] and startup_warnings(good) == []


def test_a_lab_behind_nat_runs_poll_only_with_one_warning_and_clear_text_is_warned_of(lab):
    nat = lab.settings.with_overrides(backend="digitalocean", callback_url="http://10.0.0.5:8000")
    (warning,) = startup_warnings(nat)
    assert "10.0.0.5" in warning and "poll-only" in warning and "DONE.json" in warning
    public = nat.with_overrides(callback_url="http://microfetch.lab.example.org")
    (warning,) = startup_warnings(public)
    assert "clear text" in warning and "https://" in warning
    # the stand-in's droplets live on this machine: loopback reaches them, nothing to warn of
    standin = nat.with_overrides(callback_url="http://127.0.0.1:8000",
                                 do_api_url="http://127.0.0.1:9/v2")
    assert startup_warnings(standin) == []


def test_serve_behind_nat_is_not_refused_and_says_so_in_one_line(lab, tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    settings = lab.settings.with_overrides(
        backend="digitalocean", do_token="t", do_ssh_keys=("12345",), do_ssh_private_key=key,
        callback_url="http://192.168.1.20:8000")
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        preflight(settings)  # what `serve` runs before it starts: no UsageError
    finally:
        logger.remove(sink)
    assert len(lines) == 1 and "poll-only" in lines[0]


@pytest.mark.parametrize("products", ["reads", "assembly"])
@pytest.mark.parametrize("nextflow", [True, False])
@pytest.mark.parametrize("name", ["mf-562-0-abcdef", "mf-2147483647-99999-0a1b2c"])
def test_every_cloud_init_variant_passes_cloud_init_schema(tmp_path, nextflow, name, products):
    settings = load_settings({"MICROFETCH_WORKER_PRODUCTS": products})
    document = render_user_data(name, generate_host_key(),
                                nextflow_version="25.10.0" if nextflow else "",
                                nextflow_sha256="ab" * 32 if nextflow else "",
                                extra_packages=product_packages(settings))
    packages = yaml.safe_load(document)["packages"]
    assert ("fastp" in packages and "skesa" in packages) == (products == "assembly")
    path = tmp_path / "user-data.yaml"
    path.write_text(document)
    result = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid" in result.stdout
    assert len(document.encode()) < 8 * 1024


def test_cloud_init_schema_really_rejects_a_broken_document(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("#cloud-config\npackages: 42\nssh_keys: [1, 2]\n")
    result = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1


@responses.activate
def test_droplets_are_listed_by_tag_across_pages(do_lab):
    first = copy.deepcopy(anchor("droplets_list_bytag_paginated.json"))
    first["droplets"][0].update(name="mf-562-0-aaaaaa", id=1, tags=["mf-install-lab"])
    second = copy.deepcopy(anchor("droplets_list.json"))
    second["droplets"][0].update(name="mf-562-1-bbbbbb", id=2, tags=["mf-install-lab"])
    responses.get(f"{API}/droplets/", json=first)
    responses.get(f"{API}/droplets", json=second)  # the recorded `next` link has no slash
    live = do_lab.backend.list_live()
    assert [(w.name, w.backend_id) for w in live] == [("mf-562-0-aaaaaa", "1"),
                                                      ("mf-562-1-bbbbbb", "2")]
    assert "tag_name=microfetch" in responses.calls[0].request.url
    assert "page=2" in responses.calls[1].request.url


def test_the_user_data_pins_nextflow_and_writes_its_marker_last():
    document = yaml.safe_load(render_user_data(
        "mf-562-0-abcdef", generate_host_key(), nextflow_version="25.10.0",
        nextflow_sha256="ab" * 32))
    files = {f["path"]: f for f in document["write_files"]}
    pin = "NXF_VER=25.10.0\nNXF_HOME=/var/lib/microfetch/nextflow\n"
    assert files["/etc/environment"]["content"] == pin and files["/etc/environment"]["append"]
    drop_in = files["/etc/systemd/system/microfetch-worker@.service.d/nextflow.conf"]
    assert drop_in["content"] == "[Service]\n" + "".join(
        f"Environment={line}\n" for line in pin.splitlines())  # the unit reads no /etc/environment
    script = files["/var/lib/microfetch/install-nextflow.sh"]["content"]
    assert launcher_url("25.10.0") in script and "get.nextflow.io" not in script
    assert "ab" * 32 in script
    assert document["runcmd"][-1] == ["touch", "/srv/microfetch/mf-562-0-abcdef/.bootstrap.done"]
    bare = yaml.safe_load(render_user_data("mf-562-0-abcdef", generate_host_key()))
    assert "write_files" not in bare and "default-jre-headless" not in bare["packages"]


@pytest.mark.parametrize("matches", [True, False])
def test_the_nextflow_launcher_is_installed_only_when_its_checksum_matches(tmp_path, matches):
    launcher = "#!/bin/sh\necho nextflow version $NXF_VER\n"
    served = tmp_path / "served"
    served.write_text(launcher if matches else launcher + "echo tampered\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "curl").write_text(f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\n'
                                f'cp {served} "$2"\n')  # the download, from a file
    (tools / "curl").chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = nextflow_script("25.10.0", hashlib.sha256(launcher.encode()).hexdigest(),
                             bin_dir=str(bin_dir), rejected=str(tmp_path / "rejected"))

    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                            env={"PATH": f"{tools}:/usr/bin:/bin"})

    if matches:
        assert result.returncode == 0, result.stderr
        assert (bin_dir / "nextflow").read_text() == launcher
        assert "nextflow version 25.10.0" in result.stdout  # run once, pinned by NXF_VER
    else:
        assert result.returncode != 0  # fails closed: nothing installed, the reason kept
        assert not (bin_dir / "nextflow").exists()
        assert (tmp_path / "rejected").exists()
