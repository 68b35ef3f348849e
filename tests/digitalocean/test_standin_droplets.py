"""Stand-in droplets you can log into: a real sshd on 127.0.0.N set up from the user data.

These play the failures a droplet has in production (slow to boot, dead, rebooted) with real
processes, and check that every API call goes to the one base URL.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from backend.compute import remote
from backend.compute.cloudinit import generate_host_key, render_user_data
from backend.compute.do_api import DoApi
from backend.demo.do_standin.machines import alive
from backend.errors import OperationError

from .conftest import wait_for


def boot(api: DoApi, user_key: tuple[Path, int], name: str = "mf-562-0-abcdef",
         wait: bool = True) -> tuple[int, remote.SshTarget]:
    """Create a droplet as microfetch does; the target pins the host key it generated."""
    key = generate_host_key()
    droplet_id = api.create(name=name, region="lon1", size="s-1vcpu-1gb",
                            image="debian-12-x64", ssh_keys=[user_key[1]], tags=["microfetch"],
                            user_data=render_user_data(name, key, nextflow_version="25.10.0"))
    if wait:
        wait_for(lambda: api.get(droplet_id).status == "active", what="the droplet to boot")
    info = api.get(droplet_id)
    return droplet_id, remote.SshTarget("root", info.ipv4, 22, user_key[0], key.public_line)


def ssh(target: remote.SshTarget, command: str) -> str:
    client = remote.connect(target, 5, 5)
    try:
        return remote.run(client, command)
    finally:
        client.close()


def listening(address: str) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((address, 22)) == 0


def test_a_droplet_is_its_own_address_with_the_pinned_host_key_and_the_account_key(
        as_root, standin, api, user_key):
    droplet_id, target = boot(api, user_key)
    machine = standin.cloud.droplets[droplet_id].machine

    folder = ssh(target, "ls -d /srv/microfetch/mf-562-0-abcdef").strip()

    assert target.host.startswith("127.0.0.") and target.host != "127.0.0.1"
    assert folder == "/srv/microfetch/mf-562-0-abcdef"  # runcmd's mkdir ran
    assert any("install-nextflow.sh" in line for line in machine.plan.skipped)
    stranger = remote.SshTarget("root", target.host, 22, user_key[0],
                                generate_host_key().public_line)
    with pytest.raises(OperationError, match=r"host key .* changed"):
        remote.connect(stranger, 5, 5)  # the pin is what makes the droplet trusted


def test_two_droplets_get_two_addresses(as_root, api, user_key):
    _, first = boot(api, user_key, "mf-562-0-aaaaaa")
    _, second = boot(api, user_key, "mf-562-1-bbbbbb")

    assert first.host != second.host
    assert ssh(first, "hostname -I >/dev/null; echo one").strip() == "one"
    assert ssh(second, "echo two").strip() == "two"


def test_a_deleted_droplet_stops_answering_and_its_disk_is_gone(as_root, api, user_key):
    droplet_id, target = boot(api, user_key)
    ssh(target, "setsid nohup sleep 300 > /dev/null 2>&1 < /dev/null & echo $! > "
                "/srv/microfetch/mf-562-0-abcdef/sleep.pid")
    pid = int(Path("/srv/microfetch/mf-562-0-abcdef/sleep.pid").read_text())

    api.destroy(droplet_id)

    assert not listening(target.host)
    assert not Path("/srv/microfetch/mf-562-0-abcdef").exists()
    assert not alive(pid)


def test_a_rebooted_droplet_answers_again_but_its_processes_are_gone(
        as_root, standin, api, user_key):
    droplet_id, target = boot(api, user_key)
    pid = int(ssh(target, "setsid nohup sleep 300 > /dev/null 2>&1 < /dev/null & echo $!"))
    assert alive(pid)

    requests.post(f"{standin.base}/_standin/faults", json={"fault": "reboot",
                                                            "droplet": droplet_id}, timeout=30)

    assert not alive(pid)
    assert ssh(target, "echo back").strip() == "back"


def test_a_dead_droplet_refuses_connections_while_the_api_still_lists_it(
        as_root, standin, api, user_key):
    droplet_id, target = boot(api, user_key)

    standin.cloud.kill(droplet_id)

    assert not listening(target.host)
    assert api.get(droplet_id).status == "active"
    with pytest.raises(OperationError, match="cannot reach"):
        remote.connect(target, 2, 1)


def test_a_droplet_whose_address_was_taken_meanwhile_boots_on_another(
        as_root, standin, api, user_key):
    standin.cloud.activation_seconds = 1.0
    droplet_id, _ = boot(api, user_key, wait=False)
    planned = standin.cloud.droplets[droplet_id].machine.address
    with socket.socket() as squatter:  # another stand-in, say, took it before sshd started
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs
        squatter.bind((planned, 22))
        squatter.listen()

        wait_for(lambda: api.get(droplet_id).status == "active", what="the droplet to boot")

        moved = api.get(droplet_id).ipv4
    assert moved != planned
    assert standin.cloud.ledger()["droplets"][0]["address"] == moved


def test_a_slow_droplet_stays_new_while_others_boot(as_root, standin, api, user_key):
    standin.cloud.slow_activation(3600)
    slow, _ = boot(api, user_key, "mf-562-0-aaaaaa", wait=False)

    boot(api, user_key, "mf-562-1-bbbbbb")

    assert api.get(slow).status == "new"
    assert api.get(slow).ipv4 == ""


def test_no_api_call_leaves_for_any_host_but_the_configured_one(
        as_root, standin, user_key, monkeypatch):
    """Every request the library sends passes through requests' HTTPAdapter: watch it, and
    stop anything bound elsewhere before it leaves this machine."""
    hosts: list[str] = []
    send = requests.adapters.HTTPAdapter.send

    def watched(adapter, request, *args, **kwargs):
        hosts.append(requests.utils.urlparse(request.url).netloc)
        if hosts[-1] != f"127.0.0.1:{standin.port}":
            raise requests.ConnectionError(f"refused to send to {request.url}")
        return send(adapter, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", watched)
    monkeypatch.delenv("DIGITALOCEAN_END_POINT", raising=False)
    api = DoApi(standin.cloud.token, 5, retries=0, base_url=standin.api_url + "/")
    for chunk in range(3):  # three droplets, two a page: listing needs the next-page links
        boot(api, user_key, f"mf-562-{chunk}-abcdef", wait=False)

    api.sizes()
    for droplet in api.droplets_by_tag("microfetch"):
        droplet.load()  # the library's own objects, handed back by the manager
        api.destroy(droplet.id)
    assert api.get(droplet.id) is None

    assert len(hosts) == len(standin.requests) >= 12
    assert set(hosts) == {f"127.0.0.1:{standin.port}"}


def test_a_marker_the_user_data_waits_for_is_written_at_boot(as_root, api, user_key, tmp_path):
    marker = tmp_path / "boot-finished"
    key = generate_host_key()
    user_data = render_user_data("mf-562-0-abcdef", key).replace(
        "runcmd:\n", f"runcmd:\n- - sh\n  - -c\n  - while [ ! -f {marker} ]; do sleep 1; done\n")
    droplet_id = api.create(name="mf-562-0-abcdef", region="lon1", size="s-1vcpu-1gb",
                            image="debian-12-x64", ssh_keys=[user_key[1]], tags=["microfetch"],
                            user_data=user_data)

    wait_for(lambda: api.get(droplet_id).status == "active", what="the droplet to boot")

    assert marker.exists()
