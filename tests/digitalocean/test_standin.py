"""The DigitalOcean stand-in, driven through microfetch's own API wrapper and plain HTTP.

What a person rehearsing against it relies on: the answers have DigitalOcean's shapes, lists
page the way the library follows, every answer carries the rate-limit headers, each fault
happens when asked, and the ledger bills like DigitalOcean (started hours, one-hour minimum).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from backend.compute.digitalocean import DigitalOceanBackend
from backend.compute.do_api import DoApi, QuotaReached, UnclearAnswer
from backend.demo.do_standin import LedgerEntry, billed_hours, ledger
from backend.demo.do_standin.machines import plan
from backend.errors import OperationError
from backend.settings import load_settings
from backend.state.workers import WorkerRecord
from backend.timeutil import utc_now

ANCHORS = Path(__file__).resolve().parents[1] / "data" / "digitalocean"
NOT_YET = 3600.0  # an activation delay no test outlives: the droplet stays "new", no sshd


def make(api: DoApi, name: str, tags: tuple[str, ...] = ("microfetch",)) -> int:
    return api.create(name=name, region="lon1", size="s-1vcpu-1gb", image="debian-12-x64",
                      ssh_keys=[], tags=list(tags), user_data="#cloud-config\n{}\n")


def test_droplets_are_created_listed_by_tag_across_pages_read_and_deleted(standin, api):
    standin.cloud.activation_seconds = NOT_YET
    ids = [make(api, f"mf-562-{i}-abcdef", ("microfetch", "microfetch-taxon-562"))
           for i in range(5)]
    make(api, "someone-else", ("web",))

    listed = api.by_tag("microfetch-taxon-562")

    assert sorted(d.id for d in listed) == sorted(ids)
    pages = [r["params"].get("page") for r in standin.requests
             if r["path"] == "/v2/droplets" and r["method"] == "GET"]
    assert pages == [None, "2", "3"]  # two per page: the library followed links.pages.next
    assert api.get(ids[0]).status == "new" and api.get(ids[0]).ipv4 == ""
    api.destroy(ids[0])
    assert api.get(ids[0]) is None
    api.destroy(ids[0])  # already gone is fine
    book = standin.cloud.ledger()
    assert (book["created"], book["destroyed"], len(book["live"])) == (6, 1, 5)


def test_a_create_answers_202_with_the_recorded_shape(standin, api):
    standin.cloud.activation_seconds = NOT_YET
    body = {"name": "mf-562-0-abcdef", "region": "lon1", "size": "s-1vcpu-1gb",
            "image": "debian-12-x64", "ssh_keys": [], "tags": ["microfetch"]}
    answer = requests.post(f"{standin.api_url}/droplets", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {standin.cloud.token}"})

    recorded = json.loads((ANCHORS / "droplet_create_response.json").read_text())
    assert answer.status_code == 202
    assert set(recorded["droplet"]) <= set(answer.json()["droplet"])
    assert answer.json()["droplet"]["status"] == "new"
    assert answer.json()["links"]["actions"][0]["rel"] == "create"


def test_every_answer_carries_the_rate_limit_headers_and_a_wrong_token_gets_401(standin):
    good = requests.get(f"{standin.api_url}/account", timeout=5,
                        headers={"Authorization": f"Bearer {standin.cloud.token}"})
    bad = requests.get(f"{standin.api_url}/sizes", timeout=5,
                       headers={"Authorization": "Bearer wrong"})

    for answer in (good, bad):
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= {
            h.lower() for h in answer.headers}
    assert int(bad.headers["ratelimit-remaining"]) == int(good.headers["ratelimit-remaining"]) - 1
    assert good.json()["account"]["droplet_limit"] == 25
    assert bad.status_code == 401
    assert bad.json() == json.loads((ANCHORS / "error_unauthorized.json").read_text())


def test_a_wrong_token_is_reported_as_a_token_problem(standin):
    api = DoApi("wrong", 5, retries=0, base_url=standin.api_url)
    with pytest.raises(OperationError, match="refused the token"):
        api.sizes()


def test_a_429_says_when_the_limit_resets_and_the_wrapper_waits_that_long(standin):
    sleeps: list[float] = []
    api = DoApi(standin.cloud.token, 5, sleep=sleeps.append, retries=2,
                base_url=standin.api_url)
    standin.cloud.rate_limit(count=1, reset_seconds=7)

    sizes = api.sizes()

    after = requests.get(f"{standin.api_url}/account", timeout=5, headers={
        "Authorization": f"Bearer {standin.cloud.token}"})
    assert after.status_code == 200  # the fault was used once
    assert sizes["s-2vcpu-4gb"]["price_hourly"] == 0.03571
    (slept,) = sleeps  # until `ratelimit-reset` (a whole second 7 s after the refusal)
    assert 0 < slept <= 7.0


def test_a_429_answer_has_remaining_zero_and_a_reset_in_the_future(standin):
    standin.cloud.rate_limit(count=1, reset_seconds=30)
    answer = requests.get(f"{standin.api_url}/account", timeout=5, headers={
        "Authorization": f"Bearer {standin.cloud.token}"})

    assert answer.status_code == 429
    assert answer.json()["id"] == "too_many_requests"
    assert answer.headers["ratelimit-remaining"] == "0"
    assert int(answer.headers["ratelimit-reset"]) > datetime.now(UTC).timestamp() + 20


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_a_create_that_fails_after_the_droplet_was_made_is_not_repeated_and_is_found_by_tag(
        standin, tmp_path, fault):
    standin.cloud.activation_seconds = NOT_YET
    api = DoApi(standin.cloud.token, 5, sleep=lambda s: None, retries=3,
                base_url=standin.api_url)
    standin.cloud.fail_create(fault)

    with pytest.raises(UnclearAnswer) as failed:
        make(api, "mf-562-0-abcdef", ("microfetch", "mf-worker-mf-562-0-abcdef",
                                      "mf-install-lab"))

    assert not failed.value.permanent  # nothing for a person to fix: try again later
    (found,) = api.by_tag("microfetch")  # one droplet, not one per retry
    assert found.name == "mf-562-0-abcdef"
    assert standin.cloud.ledger()["live"] == ["mf-562-0-abcdef"]
    # What dispatch does with a failed start: destroy the worker, found by its worker tag.
    settings = load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data"),
                              "MICROFETCH_BACKEND": "digitalocean",
                              "MICROFETCH_INSTALL_ID": "lab"})
    DigitalOceanBackend(settings, api).destroy(WorkerRecord(
        name="mf-562-0-abcdef", backend="digitalocean", taxon_id=562, chunk=0, runs=[],
        bytes=0, token_sha256="x", created_at=utc_now()))
    assert standin.cloud.ledger()["live"] == []
    assert make(api, "mf-562-1-abcdef")  # the fault was used once


def test_a_create_refused_with_429_is_sent_again_and_makes_one_droplet(standin):
    standin.cloud.activation_seconds = NOT_YET
    api = DoApi(standin.cloud.token, 5, sleep=lambda s: None, retries=3,
                base_url=standin.api_url)
    standin.cloud.rate_limit(count=1)

    make(api, "mf-562-0-abcdef")

    assert [d.name for d in api.by_tag("microfetch")] == ["mf-562-0-abcdef"]


def test_the_droplet_limit_refuses_a_create_with_422_and_makes_nothing(standin, api):
    standin.cloud.activation_seconds = NOT_YET
    standin.cloud.droplet_limit = 1
    make(api, "mf-562-0-abcdef")

    with pytest.raises(QuotaReached, match="exceed your droplet limit") as refused:
        make(api, "mf-562-1-abcdef")
    assert not refused.value.permanent  # back-pressure: the runs wait, the taxon is not parked
    standin.cloud.droplet_limit = 5
    standin.cloud.fail_create("422")
    with pytest.raises(OperationError, match="exceed your droplet limit"):
        make(api, "mf-562-2-abcdef")

    assert standin.cloud.ledger()["created"] == 1


def test_faults_can_be_asked_for_over_http(standin):
    faults = f"{standin.base}/_standin/faults"
    assert requests.post(faults, json={"fault": "429", "reset_seconds": 5},
                         timeout=5).status_code == 200
    unknown = requests.post(faults, json={"fault": "meteor"}, timeout=5)

    answer = requests.get(f"{standin.api_url}/account", timeout=5, headers={
        "Authorization": f"Bearer {standin.cloud.token}"})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "5"
    assert unknown.status_code == 400 and "meteor" in unknown.json()["message"]


def test_firewalls_are_created_listed_and_deleted(standin):
    auth = {"Authorization": f"Bearer {standin.cloud.token}"}
    made = requests.post(f"{standin.api_url}/firewalls", headers=auth, timeout=5, json={
        "name": "microfetch", "tags": ["microfetch"],
        "inbound_rules": [{"protocol": "tcp", "ports": "22",
                           "sources": {"addresses": ["198.51.100.7"]}}]})
    firewall = made.json()["firewall"]

    listed = requests.get(f"{standin.api_url}/firewalls", headers=auth, timeout=5).json()
    deleted = requests.delete(f"{standin.api_url}/firewalls/{firewall['id']}", headers=auth,
                              timeout=5)
    again = requests.delete(f"{standin.api_url}/firewalls/{firewall['id']}", headers=auth,
                            timeout=5)

    assert made.status_code == 202 and firewall["tags"] == ["microfetch"]
    assert [f["id"] for f in listed["firewalls"]] == [firewall["id"]]
    assert listed["meta"]["total"] == 1
    assert (deleted.status_code, again.status_code) == (204, 404)


def test_the_ledger_is_served_as_json(standin, api):
    standin.cloud.activation_seconds = NOT_YET
    api.destroy(make(api, "mf-562-0-abcdef"))

    book = requests.get(f"{standin.base}/_standin/ledger", timeout=5).json()

    assert (book["created"], book["destroyed"], book["live"]) == (1, 1, [])
    assert book["droplets"][0]["billed_hours"] == 1
    assert book["cost"] == book["droplets"][0]["price_hourly"]


START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("minutes", "billed"), [
    (0, 1), (1, 1), (59, 1), (60, 1), (61, 2), (120, 2), (121, 3), (60 * 24, 24)])
def test_every_started_hour_is_billed_with_a_one_hour_minimum(minutes, billed):
    assert billed_hours(minutes / 60) == billed


def test_the_ledger_adds_up_hours_billed_hours_and_cost_and_bills_live_droplets_until_now():
    entries = [
        LedgerEntry(1, "mf-562-0-aaaaaa", "s-1vcpu-1gb", "127.0.0.2", START,
                    START + timedelta(minutes=10)),
        LedgerEntry(2, "mf-562-1-bbbbbb", "s-2vcpu-4gb", "127.0.0.3", START,
                    START + timedelta(hours=2, seconds=1)),
        LedgerEntry(3, "mf-562-2-cccccc", "s-1vcpu-1gb", "127.0.0.4", START),
    ]
    prices = {"s-1vcpu-1gb": 0.01, "s-2vcpu-4gb": 0.03}

    book = ledger(entries, prices, now=START + timedelta(minutes=90))

    assert [d["billed_hours"] for d in book["droplets"]] == [1, 3, 2]
    assert book["billed_hours"] == 6
    assert book["cost"] == pytest.approx(0.01 + 0.09 + 0.02)
    assert book["hours"] == pytest.approx(10 / 60 + 2 + 1 / 3600 + 1.5, abs=1e-6)
    assert book["live"] == ["mf-562-2-cccccc"]
    assert (book["created"], book["destroyed"]) == (3, 2)


def test_the_user_data_is_read_as_cloud_init_would_run_it():
    steps = plan("""#cloud-config
ssh_keys: {ed25519_private: PRIVATE, ed25519_public: ssh-ed25519 AAAA}
packages: [python3, rsync]
runcmd:
  - [mkdir, -p, /srv/microfetch/mf-562-0-abcdef]
  - sh -c 'curl -fsSL https://get.nextflow.io | bash'
  - [sh, -c, "while [ ! -f /var/lib/cloud/instance/boot-finished ]; do sleep 1; done"]
""")

    assert (steps.host_private, steps.host_public) == ("PRIVATE", "ssh-ed25519 AAAA")
    assert steps.commands == [["mkdir", "-p", "/srv/microfetch/mf-562-0-abcdef"]]
    assert steps.markers == ["/var/lib/cloud/instance/boot-finished"]
    assert steps.skipped[0] == "packages: python3 rsync"
    assert any("get.nextflow.io" in line for line in steps.skipped)


def test_the_digitalocean_demo_says_it_needs_root_and_exits_2(monkeypatch, capsys):
    from backend.cli.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    assert main(["demo", "--backend", "digitalocean"]) == 2
    assert "needs root" in capsys.readouterr().out
