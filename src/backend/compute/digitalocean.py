"""The `digitalocean` backend: one short-lived droplet per chunk. Money is at stake here.

Nothing doubles and nothing leaks:

- every droplet carries tags unique to its worker (``mf-worker-<name>``), to this installation
  (``mf-install-<id>``) and to its pinned host key (``mf-hostkey-<hash>``); the record (with
  the pin) is saved before the create, the droplet id right after;
- a create is never repeated blindly: after an unclear answer the list is polled by the worker
  tag for a bounded time, and what appears with the current pin is adopted; a start after a
  crash adopts the same way; any other droplet with the worker's tag is a duplicate and goes;
- the account's droplet limit is back-pressure (fewer free slots), never a parked taxon;
- the reaper sees only this install's droplets; droplets from before install ids (no install
  tag) are adopted when a record names them and only reported otherwise;
- the runner starts once the user data wrote its marker and the tools answer.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from loguru import logger

from backend.compute import costs, remote
from backend.compute.base import ComputeBackend, LiveWorker, SaveRecord, WorkerState
from backend.compute.cloudinit import WORKERS_ROOT, generate_host_key, render_user_data
from backend.compute.do_api import DoApi, DropletInfo, QuotaReached, UnclearAnswer
from backend.compute.do_bootstrap import Bootstrap, pauses
from backend.compute.do_tags import (
    TAG,
    droplet_tags,
    has_install_tag,
    install_id,
    install_tag,
    key_tag,
    worker_tag,
)
from backend.errors import OperationError, UsageError
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.workers import Phase, WorkerRecord, WorkerStore
from backend.timeutil import utc_now

FINGERPRINT = re.compile(r"^([0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}$")
SIZES_TTL_SECONDS = 3600.0
#: Creates tried for one worker when each answer is unclear and nothing appears in the list.
CREATE_TRIES = 3
QUOTA_REPEAT_SECONDS = 600.0


def product_packages(settings: Settings) -> tuple[str, ...]:
    """Debian packages a droplet needs for what it brings home (assembly: fastp, assembler)."""
    return () if settings.worker_products == "reads" else ("fastp", settings.assembler)


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
    """What `serve` needs before it may create droplets, each saying what to set.

    What only weakens the setup (no callbacks, callbacks in clear text) is logged as one
    warning line each, see :func:`startup_warnings`, and does not stop `serve`.
    """
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
    for warning in startup_warnings(settings):
        logger.warning(warning)
    return problems


def startup_warnings(settings: Settings) -> list[str]:
    """Poll-only mode (a callback URL droplets cannot reach) and tokens sent in clear text."""
    url = urllib.parse.urlsplit(settings.callback_url)
    host = url.hostname or ""
    api_host = urllib.parse.urlsplit(settings.do_api_url).hostname or ""
    # A cloud on this machine (the stand-in) has its droplets here too: loopback reaches them.
    if _unreachable_from_outside(host) and not _is_loopback(api_host):
        return [f"MICROFETCH_CALLBACK_URL={settings.callback_url} is not reachable from a "
                "droplet: running poll-only, the collector finds each worker's DONE.json "
                "(every MICROFETCH_COLLECT_SECONDS); set a public address for prompt callbacks"]
    if url.scheme == "http" and not _unreachable_from_outside(host):
        return [f"MICROFETCH_CALLBACK_URL={settings.callback_url} is plain http on a public "
                "address: worker tokens travel in clear text; put microfetch behind TLS and "
                "use an https:// URL"]
    return []


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
        self.install = install_id(settings)
        self._sizes: tuple[float, dict[str, dict[str, float]]] | None = None
        self._limit_until = 0.0      # monotonic: no create before this (the account's limit)
        self._quota_said = ("", 0.0)  # (reason, monotonic time) last logged for the quota
        self._reported: set[int] = set()  # foreign droplets already reported

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
        size = self.size()
        spent = costs.spent_today(
            [r for r in WorkerStore.of(self.settings).all() if r.backend == self.name],
            size, utc_now(), self.settings.fetch_mbps, self.settings.egress_price_per_gib,
            costs.products_of(self.settings, int(size.get("vcpus", 1))))
        if spent >= self.settings.do_daily_spend_cap:
            return 0
        free = max(0, self.settings.max_workers - len(mine))
        return min(free, self._quota_room(free)) if free else 0

    def _quota_room(self, wanted: int) -> int:
        """Droplets the account may still make: its limit less every droplet it has (of any
        install or tool); none for a while after DigitalOcean refused one for the limit."""
        wait = self._limit_until - time.monotonic()
        if wait > 0:
            self._say_quota("refused", "DigitalOcean refused a droplet for the account's "
                            f"droplet limit: no new droplet for {wait:.0f} s "
                            "(MICROFETCH_DO_LIMIT_WAIT_SECONDS); the runs wait")
            return 0
        limit, count = self.api.droplet_limit(), self.api.droplet_count()
        room = max(0, limit - count)
        if room < wanted:
            self._say_quota("full", f"the DigitalOcean account has {count} of its {limit} "
                            f"droplets: {room} more may start now, the other runs wait")
        return room

    def _say_quota(self, state: str, line: str) -> None:
        """One line when the quota starts holding workers back, not one a heartbeat: the same
        reason again (after a moment of room) is said again only QUOTA_REPEAT_SECONDS later."""
        now = time.monotonic()
        if state and (state != self._quota_said[0] or now - self._quota_said[1] >
                      QUOTA_REPEAT_SECONDS):
            logger.warning(line)
            self._quota_said = (state, now)

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
        self._ensure_firewall()  # again: a last droplet's destroy may have raced the create
        record.address = info.ipv4
        record.remote_dir = str(PurePosixPath(self.workers_root) / record.name)
        record.phase = Phase.STARTING
        save(record)
        Bootstrap(f"droplet {record.droplet_id} ({record.name})", record.name,
                  self.workers_root, self.settings.do_bootstrap_seconds,
                  self.settings.nextflow_version, self.poll_seconds, self.sleep).run(
            self.target(record), self.settings.ssh_connect_timeout,
            self.settings.ssh_boot_seconds)
        remote.ship_and_start(self.target(record), folder, record.remote_dir,
                              self.settings.ssh_connect_timeout, self.settings.ssh_boot_seconds)
        record.phase = Phase.RUNNING
        save(record)
        return record

    def _create(self, record: WorkerRecord, save: SaveRecord) -> None:
        """Adopt the worker's droplet if it exists, else create it: never two."""
        if self._adopt(record, save):
            return
        if time.monotonic() < self._limit_until:
            raise QuotaReached(f"not creating droplet {record.name}: the account's droplet "
                               "limit was reached moments ago; microfetch tries again later")
        self._ensure_firewall()
        log = taxon_log(record.taxon_id)
        for attempt in range(1, CREATE_TRIES + 1):
            key = generate_host_key()
            record.host_key = key.public_line
            record.extra["droplet_tag"] = worker_tag(record.name)
            save(record)  # the pin and the tag are known before the droplet exists
            try:
                record.droplet_id = self.api.create(
                    name=record.name, region=self.settings.do_region,
                    size=self.settings.do_size, image=self.settings.do_image,
                    ssh_keys=key_ids(self.settings), tags=droplet_tags(record, self.install),
                    user_data=render_user_data(
                        record.name, key, nextflow_version=self.settings.nextflow_version,
                        nextflow_sha256=self.settings.nextflow_sha256,
                        extra_packages=product_packages(self.settings)))
            except UnclearAnswer as exc:
                log.warning("creating droplet {} (try {} of {}): {}; looking for it by its tag "
                            "for up to {} s", record.name, attempt, CREATE_TRIES, exc,
                            self.settings.do_list_lag_seconds)
                if self._await_listing(record, save):
                    return
                continue
            except QuotaReached:
                self._limit_until = time.monotonic() + self.settings.do_limit_wait_seconds
                raise
            save(record)
            log.info("created droplet {} ({}) for {}", record.droplet_id,
                     self.settings.do_size, record.name)
            return
        raise OperationError(f"creating droplet {record.name} got {CREATE_TRIES} unclear "
                             "answers and none of them appeared; microfetch tries again later")

    def _await_listing(self, record: WorkerRecord, save: SaveRecord) -> bool:
        """Poll the list by the worker's tag (it lags creation) until the droplet appears."""
        deadline = time.monotonic() + self.settings.do_list_lag_seconds
        waits = pauses(self.poll_seconds)
        while True:
            if self._adopt(record, save):
                return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(next(waits))

    def _adopt(self, record: WorkerRecord, save: SaveRecord) -> bool:
        """Take the droplet made for this worker with its current pin; destroy the others.

        A droplet with the worker's tag but another host key came from an earlier try whose
        answer was lost: its key is no longer pinned, so it can never be used, only billed.
        """
        found = self._of_worker(record.name)
        pinned = key_tag(record.host_key) if record.host_key else None
        keep = min((d for d in found if pinned in d.tags), key=lambda d: d.id, default=None)
        for droplet in found:
            if droplet is not keep:
                self._destroy_duplicate(record, droplet.id)
        if keep is None:
            return False
        record.droplet_id = keep.id
        save(record)
        taxon_log(record.taxon_id).info("adopted droplet {} for {} (made before its answer "
                                        "arrived)", keep.id, record.name)
        return True

    def _of_worker(self, name: str) -> list[DropletInfo]:
        """Droplets with the worker's tag, of this install only (names may meet across
        installs: the suffix is random, not unique)."""
        return [d for d in self.api.by_tag(worker_tag(name))
                if install_tag(self.install) in d.tags]

    def _destroy_duplicate(self, record: WorkerRecord, droplet_id: int) -> None:
        self.api.destroy(droplet_id)
        taxon_log(record.taxon_id).warning("destroyed droplet {}: a duplicate of worker {}",
                                           droplet_id, record.name)

    def _wait_active(self, record: WorkerRecord) -> DropletInfo:
        """Poll with our own deadline: creation takes minutes, the library's wait 20 s."""
        assert record.droplet_id is not None
        deadline = time.monotonic() + self.settings.do_create_timeout
        waits = pauses(self.poll_seconds)
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
            self.sleep(next(waits))

    # firewall ------------------------------------------------------------------------------

    @property
    def firewall_name(self) -> str:
        return f"microfetch-{self.install}"

    def _ensure_firewall(self) -> None:
        """With MICROFETCH_DO_SSH_FROM, one firewall on the install's tag: SSH from there."""
        if not self.settings.do_ssh_from or self.api.firewalls(self.firewall_name):
            return
        self.api.create_firewall(self.firewall_name, install_tag(self.install),
                                 self.settings.do_ssh_from)
        logger.info("created Cloud Firewall {}: SSH only from {}", self.firewall_name,
                    self.settings.do_ssh_from)

    def _drop_firewall_if_last(self) -> None:
        if not self.settings.do_ssh_from or self.api.by_tag(install_tag(self.install)):
            return
        for firewall_id in self.api.firewalls(self.firewall_name):
            self.api.delete_firewall(firewall_id)
            logger.info("removed Cloud Firewall {}: the install has no droplet left",
                        self.firewall_name)

    # the rest of the interface ---------------------------------------------------------------

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

    def remove_runs(self, record: WorkerRecord, runs: Sequence[str]) -> None:
        remote.remove_runs_of(self.target(record), record.remote_dir, list(runs),
                              self.settings.ssh_connect_timeout)

    def destroy(self, record: WorkerRecord) -> None:
        """Destroy the recorded droplet; with no id recorded, every droplet of the worker."""
        if record.droplet_id is not None:
            doomed = [record.droplet_id]
        else:
            doomed = [d.id for d in self._of_worker(record.name)]
        for droplet_id in doomed:
            self.api.destroy(droplet_id)
            taxon_log(record.taxon_id).info("destroyed droplet {} ({})", droplet_id, record.name)
        self._drop_firewall_if_last()

    def list_live(self) -> list[LiveWorker]:
        """This install's droplets, and older ones (no install tag) that a record names.

        Another install's droplets are not ours to reap; an older droplet no record names
        may be another install's from before install ids: it is reported, never destroyed.
        """
        droplets = self.api.by_tag(TAG)
        legacy = [d for d in droplets if not has_install_tag(d.tags)]
        named = {r.name for r in WorkerStore.of(self.settings).all()} if legacy else set()
        live = []
        for droplet in droplets:
            if install_tag(self.install) in droplet.tags or \
                    (droplet in legacy and droplet.name in named):
                live.append(LiveWorker(droplet.name, droplet.ipv4, str(droplet.id),
                                       droplet.created_at))
            elif droplet in legacy and droplet.id not in self._reported:
                self._reported.add(droplet.id)
                logger.warning("droplet {} ({}) is tagged {} but carries no install id and no "
                               "record names it: left alone; destroy it by hand if it is not "
                               "another installation's", droplet.id, droplet.name, TAG)
        return live
