"""A droplet's whole life: the API mocked, the droplet played by a real local sshd.

The sshd takes its host key from the user data microfetch sent, as cloud-init would, so the
connection proves the pin works end to end: create, pinned connection, upload, run, collect,
destroy.
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import json
import time
from pathlib import Path

import responses
import yaml

from backend.collection.collect import Collector
from backend.compute.cloudinit import bootstrap_marker
from backend.compute.digitalocean import DigitalOceanBackend
from backend.compute.do_api import DoApi
from backend.jobs.dispatch import Dispatcher
from backend.state.accessions import RunStatus
from backend.state.registry import Stage
from backend.timeutil import utc_now
from tests.loopback import md5
from tests.sshd import make_sshd

from ..collect.conftest import TAXON
from .test_digitalocean import API, anchor, droplet, tagged


def test_a_droplet_is_created_reached_with_its_pinned_key_collected_and_destroyed(
        lab, file_server, tmp_path):
    if getpass.getuser() != "root":
        raise AssertionError("this test plays a droplet's root login with a local sshd")
    sshd = make_sshd(tmp_path / "droplet")
    settings = lab.settings.with_overrides(
        backend="digitalocean", do_token="secret", do_ssh_keys=("12345",),
        do_ssh_private_key=sshd.user_key, do_size="1gb", fastq_scheme="http",
        callback_url="", ssh_connect_timeout=5, ssh_boot_seconds=20, nextflow_version="")
    lab.settings = settings
    backend = DigitalOceanBackend(settings, DoApi("secret", 5, retries=1), ssh_port=sshd.port,
                                  workers_root=str(tmp_path / "srv"), poll_seconds=0.1)
    lab.backend = backend
    contents = lab.serve_runs(file_server, 2)
    state: dict[str, object] = {}

    def create(request):  # what cloud-init does with the user data: install the host key
        body = json.loads(request.body)
        keys = yaml.safe_load(body["user_data"])["ssh_keys"]
        (sshd.folder / "host_ed25519").write_text(keys["ed25519_private"])
        (sshd.folder / "host_ed25519").chmod(0o600)
        (sshd.folder / "host_ed25519.pub").write_text(keys["ed25519_public"] + "\n")
        sshd.start()
        marker = Path(bootstrap_marker(body["name"], str(tmp_path / "srv")))
        marker.parent.mkdir(parents=True)  # and its runcmd, whose last step is the marker
        marker.touch()
        state["name"], state["tags"] = body["name"], body["tags"]
        reply = copy.deepcopy(anchor("droplet_create_response.json"))
        reply["droplet"].update(id=4242, name=body["name"])
        return 202, {}, json.dumps(reply)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.get(f"{API}/sizes/", json=anchor("sizes_list.json"))
        api.get(f"{API}/droplets/", json=tagged())
        api.get(f"{API}/droplets", json={"droplets": [], "links": {}, "meta": {"total": 0}})
        api.get(f"{API}/account", json={"account": {"droplet_limit": 25}})
        api.add_callback(responses.POST, f"{API}/droplets/", callback=create)
        api.add_callback(responses.GET, f"{API}/droplets/4242", callback=lambda r: (
            200, {}, json.dumps(droplet(4242, str(state["name"]), ip="127.0.0.1"))))
        api.delete(f"{API}/droplets/4242", status=204)
        lab.registry.update(TAXON, stage=Stage.DISPATCH)
        try:
            (name,) = Dispatcher(settings, backend, lab.registry, lab.store).dispatch(
                TAXON, utc_now()).started
            record = lab.store.get(name)
            assert record.droplet_id == 4242 and record.address == "127.0.0.1"
            served_key = (sshd.folder / "host_ed25519.pub").read_text().split()[:2]
            assert " ".join(served_key) == record.host_key  # the pin is the droplet's key
            assert state["tags"][:4] == ["microfetch", "microfetch-taxon-562",
                                         "microfetch-chunk-0", f"mf-worker-{name}"]
            deadline = time.monotonic() + 60
            while backend.status(record).value != "done":
                assert time.monotonic() < deadline, "the droplet's runner did not finish"
                time.sleep(0.3)

            report = Collector(settings, backend, lab.registry, lab.store).collect()
        finally:
            sshd.stop()
        deletes = [c for c in api.calls if c.request.method == "DELETE"]

    assert report.collected == [name]
    assert len(deletes) == 1 and deletes[0].request.url.endswith("/droplets/4242")
    for acc, files in contents.items():
        for file_name, data in files.items():
            home = lab.genomes() / acc / file_name
            assert hashlib.md5(home.read_bytes()).hexdigest() == md5(data)
    assert {r.status for r in lab.accessions.load().values()} == {RunStatus.FETCHED}
    assert not lab.registry.get(TAXON).droplet_ips
