"""The `digitalocean` backend: one short-lived droplet per chunk. Money is at stake here.

Nothing leaks: the worker record (with the pinned public host key) is saved before the droplet
is created, the droplet id right after; a droplet created just before a crash is found again by
its name and tags. The reconciler destroys tagged droplets without a record.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from backend import costs, remote
from backend.cloudinit import WORKERS_ROOT, generate_host_key, render_user_data
from backend.compute.base import ComputeBackend, LiveWorker, SaveRecord, WorkerState
from backend.compute.do_api import DoApi, DropletInfo
from backend.errors import OperationError, UsageError
from backend.logs import taxon_log
from backend.settings import Settings
from backend.timeutil import utc_now
from backend.workers import Phase, WorkerRecord, WorkerStore

TAG = "microfetch"
FINGERPRINT = re.compile(r"^([0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}$")
SIZES_TTL_SECONDS = 3600.0


def key_ids(settings: Settings) -> list[int | str]:
    """SSH key ids (numbers) or fingerprints; never public keys (a 10-a-minute endpoint)."""
    keys: list[int | str] = []
    for key in settings.do_ssh_keys:
        if key.isdigit():
            keys.append(int(key))
        elif FINGERPRINT.match(key):
            keys.append(key.lower())
        else:
            raise UsageError(f"MICROFETCH_DO_SSH_KEYS has {key[:30]!r}: give key ids or MD5 "
                             "fingerprints (aa:bb:…), as listed by `doctl compute ssh-key list`")
    return keys


def startup_problems(settings: Settings) -> list[str]:
    """What `serve` needs before it may create droplets, each saying what to set."""
    problems = []
    if not settings.do_token:
        problems.append("set DIGITALOCEAN_TOKEN to a read/write API token;")
    if not settings.do_ssh_keys:
        problems.append("set MICROFETCH_DO_SSH_KEYS to the ids or fingerprints of your "
                        "DigitalOcean SSH keys;")
    else:
        try:
            key_ids(settings)
        except UsageError as exc:
            problems.append(f"{exc};")
    key = settings.do_ssh_private_key
    if not key or not Path(key).is_file():
        problems.append("set MICROFETCH_DO_SSH_PRIVATE_KEY to the private key matching those "
                        "SSH keys;")
    host = urllib.parse.urlsplit(settings.callback_url).hostname or ""
    api_host = urllib.parse.urlsplit(settings.do_api_url).hostname or ""
    # A cloud on this machine (the stand-in) has its droplets here too: loopback reaches them.
    if _unreachable_from_outside(host) and not _is_loopback(api_host):
        problems.append(f"MICROFETCH_CALLBACK_URL={settings.callback_url} is {host}, which a "
                        "droplet cannot reach; set it to this machine's public address;")
    return problems


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _unreachable_from_outside(host: str) -> bool:
    if host in ("", "localhost") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: trust the person who set it
    return address.is_loopback or address.is_private or address.is_link_local


class DigitalOceanBackend(ComputeBackend):
    name = "digitalocean"

    def __init__(self, settings: Settings, api: DoApi | None = None, *, ssh_port: int = 22,
                 workers_root: str = WORKERS_ROOT, poll_seconds: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.api = api or DoApi(settings.do_token, settings.do_http_timeout,
                                base_url=settings.do_api_url)
        self.ssh_port, self.workers_root = ssh_port, workers_root
        self.poll_seconds, self.sleep = poll_seconds, sleep
        self._sizes: tuple[float, dict[str, dict[str, float]]] | None = None

    # money ---------------------------------------------------------------------------------

    def size(self) -> dict[str, float]:
        if self._sizes is None or time.monotonic() - self._sizes[0] > SIZES_TTL_SECONDS:
            self._sizes = (time.monotonic(), self.api.sizes())
        sizes = self._sizes[1]
        if self.settings.do_size not in sizes:
            raise OperationError(f"MICROFETCH_DO_SIZE={self.settings.do_size} is not a size "
                                 f"DigitalOcean offers ({', '.join(sorted(sizes))})",
                                 permanent=True)
        return sizes[self.settings.do_size]

    def estimate(self, chunk_bytes: Sequence[int]) -> dict[str, Any]:
        size = self.size()
        return costs.estimate(chunk_bytes, size, self.settings.fetch_mbps,
                              self.settings.egress_price_per_gib,
                              costs.products_of(self.settings, int(size.get("vcpus", 1)))
                              ).to_json()

    def slots(self, live: Sequence[WorkerRecord]) -> int:
        mine = [r for r in live if r.backend == self.name]
        spent = costs.spent_today(
            [r for r in WorkerStore.of(self.settings).all() if r.backend == self.name],
            self.size(), utc_now(), self.settings.fetch_mbps, self.settings.egress_price_per_gib)
        if spent >= self.settings.do_daily_spend_cap:
            return 0
        return max(0, self.settings.max_workers - len(mine))

    def disk_bytes(self) -> int:
        return int(self.size()["disk"] * 1e9)

    # life of a droplet ---------------------------------------------------------------------

    def target(self, record: WorkerRecord) -> remote.SshTarget:
        assert self.settings.do_ssh_private_key is not None
        return remote.SshTarget("root", record.address, self.ssh_port,
                                Path(self.settings.do_ssh_private_key), record.host_key)

    def start(self, record: WorkerRecord, folder: Path, save: SaveRecord) -> WorkerRecord:
        if record.droplet_id is None:
            self._create(record, save)
        info = self._wait_active(record)
        record.address = info.ipv4
        record.remote_dir = str(PurePosixPath(self.workers_root) / record.name)
        record.phase = Phase.STARTING
        save(record)
        remote.ship_and_start(self.target(record), folder, record.remote_dir,
                              self.settings.ssh_connect_timeout, self.settings.ssh_boot_seconds)
        record.phase = Phase.RUNNING
        save(record)
        return record

    def _create(self, record: WorkerRecord, save: SaveRecord) -> None:
        tags = [TAG, f"{TAG}-taxon-{record.taxon_id}", f"{TAG}-chunk-{record.chunk}"]
        existing = [d for d in self.api.by_tag(tags[1]) if d.name == record.name]
        if existing and record.host_key:  # created just before a crash: adopt, never repeat
            record.droplet_id = existing[0].id
            save(record)
            return
        key = generate_host_key()
        record.host_key = key.public_line
        save(record)  # the pin is known before the droplet exists
        user_data = render_user_data(record.name, key)
        record.droplet_id = self.api.create(
            name=record.name, region=self.settings.do_region, size=self.settings.do_size,
            image=self.settings.do_image, ssh_keys=key_ids(self.settings), tags=tags,
            user_data=user_data)
        save(record)
        taxon_log(record.taxon_id).info("created droplet {} ({}) for {}", record.droplet_id,
                                        self.settings.do_size, record.name)

    def _wait_active(self, record: WorkerRecord) -> DropletInfo:
        """Poll with our own deadline: creation takes minutes, the library's wait 20 s."""
        assert record.droplet_id is not None
        deadline = time.monotonic() + self.settings.do_create_timeout
        while True:
            info = self.api.get(record.droplet_id)
            if info is None:
                raise OperationError(f"droplet {record.droplet_id} ({record.name}) vanished "
                                     "while starting")
            if info.status == "active" and info.ipv4:
                return info
            if time.monotonic() >= deadline:
                raise OperationError(
                    f"droplet {record.droplet_id} ({record.name}) was not active with a public "
                    f"IPv4 after {self.settings.do_create_timeout} s (status {info.status}); "
                    "it is destroyed and its runs go back to pending")
            self.sleep(self.poll_seconds)

    def status(self, record: WorkerRecord) -> WorkerState:
        if record.droplet_id is None:
            return WorkerState.STARTING
        info = self.api.get(record.droplet_id)
        if info is None:
            return WorkerState.GONE
        if not record.remote_dir or info.status != "active":
            return WorkerState.STARTING
        return remote.state_of(self.target(record), record.remote_dir,
                               self.settings.ssh_connect_timeout)

    def pull(self, record: WorkerRecord, dest: Path, timeout: int) -> None:
        known = Path(self.settings.data_dir) / "ssh" / f"{record.name}.known_hosts"
        remote.pull_out(self.target(record), record.remote_dir, dest, known, timeout,
                        self.settings.ssh_connect_timeout,
                        f"rsync of droplet {record.droplet_id} ({record.name})")

    def destroy(self, record: WorkerRecord) -> None:
        if record.droplet_id is None:
            matches = [d for d in self.api.by_tag(TAG) if d.name == record.name]
            record.droplet_id = matches[0].id if matches else None
        if record.droplet_id is not None:
            self.api.destroy(record.droplet_id)
            taxon_log(record.taxon_id).info("destroyed droplet {} ({})", record.droplet_id,
                                            record.name)

    def list_live(self) -> list[LiveWorker]:
        return [LiveWorker(d.name, d.ipv4, str(d.id), d.created_at)
                for d in self.api.by_tag(TAG)]
