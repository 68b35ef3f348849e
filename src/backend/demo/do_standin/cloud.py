"""The stand-in cloud's state: droplets, keys, firewalls, faults and the ledger, behind one lock.

The HTTP layer (``server.py``) only translates requests into these calls and their answers into
API v2 bodies; tests and ``microfetch demo`` call the same methods directly.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.demo.do_standin.ledger import LedgerEntry, ledger
from backend.demo.do_standin.machines import AddressTaken, Machine, free_address, plan
from backend.timeutil import format_time, utc_now

#: Today's basic droplet sizes (USD); ``transfer`` is TB a month, ``disk`` GB.
SIZES: dict[str, dict[str, Any]] = {
    "s-1vcpu-1gb": {"memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
                    "price_monthly": 6.0, "price_hourly": 0.00893},
    "s-2vcpu-4gb": {"memory": 4096, "vcpus": 2, "disk": 80, "transfer": 4.0,
                    "price_monthly": 24.0, "price_hourly": 0.03571},
    "s-4vcpu-8gb": {"memory": 8192, "vcpus": 4, "disk": 160, "transfer": 5.0,
                    "price_monthly": 48.0, "price_hourly": 0.07143},
}
REGIONS = ("lon1", "ams3", "fra1", "nyc3", "sfo3")
CREATE_FAULTS = ("500", "504", "drop", "422")
BOOT_TRIES = 3


def _take(queue: deque[float]) -> float:
    """The next queued fault value, or 0 when none is queued."""
    return queue.popleft() if queue else 0.0


class ApiError(Exception):
    """An answer other than success, with DigitalOcean's status, id and message."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


def fingerprint(public_line: str) -> str:
    """DigitalOcean's key fingerprint: MD5 of the key blob, colon-separated hex."""
    digest = hashlib.md5(base64.b64decode(public_line.split()[1])).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


@dataclass
class Droplet:
    id: int
    name: str
    size: str
    region: str
    image: str
    tags: list[str]
    created_at: datetime
    machine: Machine
    status: str = "new"
    listed_from: float = 0.0  # time.monotonic() from which listings show it


@dataclass
class Faults:
    """What goes wrong next; each queued fault is used once."""

    create: deque[str] = field(default_factory=deque)   # "500", "504", "drop", "422"
    rate_limited: int = 0                               # next N requests answer 429
    rate_reset_seconds: int = 2
    slow: deque[float] = field(default_factory=deque)   # extra seconds before "active"
    list_lag: deque[float] = field(default_factory=deque)  # seconds unseen by listings
    answer_delay: deque[float] = field(default_factory=deque)  # a made droplet's answer waits
    late_bootstrap: deque[float] = field(default_factory=deque)  # runcmd after sshd is up


class Cloud:
    """Everything the API can see and change, safe to use from many threads."""

    def __init__(self, token: str = "standin-token", *, activation_seconds: float = 1.0,
                 droplet_limit: int = 25, folder: Path | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.token, self.activation_seconds = token, activation_seconds
        self.droplet_limit, self.clock = droplet_limit, clock
        self.folder = folder or Path(tempfile.mkdtemp(prefix="do-standin-"))
        self.faults = Faults()
        self.droplets: dict[int, Droplet] = {}
        self.destroyed: dict[int, Droplet] = {}  # kept, so tests can see what each one did
        self.keys: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.entries: list[LedgerEntry] = []
        self.lock = threading.RLock()
        self._ids = itertools.count(3164494)
        self._key_ids = itertools.count(512189)

    # the account --------------------------------------------------------------------------

    def add_ssh_key(self, public_line: str, name: str = "microfetch") -> dict[str, Any]:
        """Register a public key with the account; returns it with its id and fingerprint."""
        kind, blob = public_line.split()[:2]
        key = {"id": next(self._key_ids), "fingerprint": fingerprint(public_line),
               "public_key": f"{kind} {blob}", "name": name}
        with self.lock:
            self.keys[key["id"]] = key
        return key

    def _public_keys(self, wanted: list[Any]) -> list[str]:
        found = []
        for ref in wanted:
            match = [k for k in self.keys.values() if ref in (k["id"], k["fingerprint"])
                     or str(ref) == str(k["id"])]
            if not match:
                raise ApiError(422, "unprocessable_entity", f"ssh_key {ref} is not a key of "
                               "this account")
            found.append(match[0]["public_key"])
        return found

    # droplets -----------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> tuple[Droplet, str]:
        """Make a droplet and start booting it; returns it and the create fault to play."""
        name, size = str(body.get("name") or ""), str(body.get("size") or "")
        if not name:
            raise ApiError(422, "unprocessable_entity", "Name is required")
        if size not in SIZES:
            raise ApiError(422, "unprocessable_entity",
                           "You specified an invalid size for Droplet creation.")
        if body.get("region") not in REGIONS:
            raise ApiError(422, "unprocessable_entity",
                           "You specified an invalid region for Droplet creation.")
        with self.lock:
            fault = self.faults.create.popleft() if self.faults.create else ""
            if fault == "422" or len(self.droplets) >= self.droplet_limit:
                raise ApiError(422, "unprocessable_entity",
                               "creating this/these droplet(s) will exceed your droplet limit")
            keys = self._public_keys(list(body.get("ssh_keys") or []))
            droplet_id = next(self._ids)
            address = free_address({d.machine.address for d in self.droplets.values()})
            machine = Machine(droplet_id, address, self.folder / f"droplet-{droplet_id}",
                              plan(str(body.get("user_data") or "")), keys,
                              bootstrap_delay=_take(self.faults.late_bootstrap))
            droplet = Droplet(droplet_id, name, size, str(body["region"]),
                              str(body.get("image") or ""), list(body.get("tags") or []),
                              self.clock(), machine,
                              listed_from=time.monotonic() + _take(self.faults.list_lag))
            self.droplets[droplet_id] = droplet
            self.entries.append(LedgerEntry(droplet_id, name, size, address, droplet.created_at))
            delay = self.activation_seconds + (self.faults.slow.popleft()
                                               if self.faults.slow else 0.0)
        threading.Thread(target=self._boot, args=(droplet, delay), daemon=True).start()
        return droplet, fault

    def _boot(self, droplet: Droplet, delay: float) -> None:
        """Wait out the activation delay, then boot; a failed boot leaves the droplet "new"."""
        time.sleep(delay)
        booted = False
        for _ in range(BOOT_TRIES):
            try:
                booted = droplet.machine.first_boot()  # a delete meanwhile makes this a no-op
                break
            except AddressTaken as exc:  # another stand-in won the race for the address
                droplet.machine.ran.append(f"boot failed: {exc}")
                self._move(droplet)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                droplet.machine.ran.append(f"boot failed: {exc}")
                break
        if booted:
            with self.lock:
                droplet.status = "active"

    def _move(self, droplet: Droplet) -> None:
        with self.lock:
            taken = {d.machine.address for d in self.droplets.values()}
            droplet.machine.address = free_address(taken)
            entry = next(e for e in self.entries if e.id == droplet.id)
            entry.address = droplet.machine.address

    def get(self, droplet_id: int) -> Droplet:
        with self.lock:
            droplet = self.droplets.get(droplet_id)
        if droplet is None:
            raise ApiError(404, "not_found",
                           "The resource you were accessing could not be found.")
        return droplet

    def tagged(self, tag: str | None) -> list[Droplet]:
        with self.lock:
            found = sorted(self.droplets.values(), key=lambda d: d.id)
        now = time.monotonic()
        return [d for d in found if (tag is None or tag in d.tags) and d.listed_from <= now]

    def destroy(self, droplet_id: int) -> None:
        """Delete: billing stops now, sshd and every process of the droplet end, disk goes."""
        with self.lock:
            droplet = self.get(droplet_id)
            self.destroyed[droplet_id] = self.droplets.pop(droplet_id)
            entry = next(e for e in self.entries if e.id == droplet_id)
            entry.destroyed_at = self.clock()
        droplet.machine.destroy()

    def kill(self, droplet_id: int) -> None:
        """The droplet dies: sshd and its processes stop; the API still says active."""
        self.get(droplet_id).machine.halt()

    def reboot(self, droplet_id: int) -> None:
        """sshd restarts; every process started through it is gone."""
        self.get(droplet_id).machine.reboot()

    def shutdown(self) -> None:
        """The whole cloud goes away: machines and disks, but the ledger keeps them live."""
        with self.lock:
            machines = [d.machine for d in self.droplets.values()]
        for machine in machines:
            machine.destroy()

    # firewalls ----------------------------------------------------------------------------

    def create_firewall(self, body: dict[str, Any]) -> dict[str, Any]:
        firewall = {"id": str(uuid.uuid4()), "name": str(body.get("name") or ""),
                    "status": "succeeded", "created_at": format_time(self.clock()),
                    "inbound_rules": body.get("inbound_rules") or [],
                    "outbound_rules": body.get("outbound_rules") or [],
                    "droplet_ids": body.get("droplet_ids") or [], "tags": body.get("tags") or [],
                    "pending_changes": []}
        with self.lock:
            self.firewalls[firewall["id"]] = firewall
        return firewall

    def delete_firewall(self, firewall_id: str) -> None:
        with self.lock:
            if self.firewalls.pop(firewall_id, None) is None:
                raise ApiError(404, "not_found",
                               "The resource you were accessing could not be found.")

    # faults and money ---------------------------------------------------------------------

    def fail_create(self, kind: str, count: int = 1) -> None:
        """The next creates answer ``500`` or drop the connection after the droplet was made,
        or answer ``422`` (droplet limit) without making one."""
        if kind not in CREATE_FAULTS:
            raise ValueError(f"create fault {kind!r} is not one of {', '.join(CREATE_FAULTS)}")
        self.faults.create.extend([kind] * count)

    def rate_limit(self, count: int = 1, reset_seconds: int = 2) -> None:
        """The next ``count`` requests answer 429 until ``reset_seconds`` from then."""
        self.faults.rate_limited += count
        self.faults.rate_reset_seconds = reset_seconds

    def slow_activation(self, seconds: float, count: int = 1) -> None:
        self.faults.slow.extend([seconds] * count)

    def lag_listing(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` droplets appear in listings only ``seconds`` after creation."""
        self.faults.list_lag.extend([seconds] * count)

    def delay_answer(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` creates make the droplet at once and answer ``seconds`` later."""
        self.faults.answer_delay.extend([seconds] * count)

    def late_bootstrap(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` droplets answer SSH ``seconds`` before their runcmd has run."""
        self.faults.late_bootstrap.extend([seconds] * count)

    def take_answer_delay(self) -> float:
        with self.lock:
            return _take(self.faults.answer_delay)

    def take_rate_limit(self) -> int | None:
        """Seconds until reset when this request is to be refused with 429."""
        with self.lock:
            if self.faults.rate_limited <= 0:
                return None
            self.faults.rate_limited -= 1
            return self.faults.rate_reset_seconds

    def prices(self) -> dict[str, float]:
        return {slug: float(size["price_hourly"]) for slug, size in SIZES.items()}

    def ledger(self, now: datetime | None = None) -> dict[str, Any]:
        with self.lock:
            return ledger(list(self.entries), self.prices(), now or self.clock())
