"""The one wrapper around python-digitalocean.

The library sets no timeout (unless an environment variable says so) and retries nothing; a
429 and a 5xx both become a bare ``DataReadError``. A mixin wraps the library's single request
method, so every call (POST included) gets our timeout and the retries of :mod:`backend.retry`
(bounded, on 429 and 5xx, honouring ``ratelimit-reset`` and ``Retry-After`` within bounds), and
waits out an exhausted ``ratelimit-remaining`` before the next request. Other errors
surface with the API's message and what to do; two are told apart because the caller acts on
them: an unclear answer to a create (:class:`UnclearAnswer`) and the account's droplet limit
(:class:`QuotaReached`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import digitalocean
import requests
from digitalocean.baseapi import (
    DELETE,
    GET,
    POST,
    BaseAPI,
    DataReadError,
    JSONReadError,
    NotFoundError,
)

from backend import retry
from backend.errors import OperationError
from backend.retry import TRANSIENT_HTTP_ERRORS, GaveUp, RetryPolicy, describe, http_policy
from backend.timeutil import parse_time

DEFAULT_API_URL = "https://api.digitalocean.com/v2"
#: The longest wait a retry header may ask for; anything longer or unreadable is capped here.
MAX_RETRY_AFTER = retry.MAX_WAIT
#: DigitalOcean's words when a create would pass the account's droplet limit.
LIMIT_MESSAGE = "droplet limit"


class UnclearAnswer(OperationError):
    """A create that failed after it was sent: the droplet may exist, so it is not repeated."""


class QuotaReached(OperationError):
    """The account's droplet limit: wait for a free slot (never permanent, nothing parked)."""


@dataclass
class Pacer:
    """Every request of one :class:`DoApi`: our timeout, the retry policy of
    :mod:`backend.retry`, and the account's rate-limit window shared by every request."""

    timeout: float
    retries: int = 5
    backoff: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time  # epoch seconds, as ``ratelimit-reset`` is
    #: When the API said no request is left until its reset (epoch seconds), else 0.
    paused_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def policy(self) -> RetryPolicy:
        return http_policy(self.retries, base=self.backoff)

    def perform(self, request: Callable[[], requests.Response],
                repeatable: bool = True) -> requests.Response:
        """Send, retrying what is safe to repeat.

        A POST that failed after it was sent (a 5xx, a dropped connection, a read timeout) may
        have made the droplet: sending it again would make a second one, billed as long as the
        worker lives. So only a 429 or a connect timeout (refused before anything happened)
        repeats a POST; anything else raises :class:`UnclearAnswer` at once, and the caller
        looks for the droplet by its worker tag before it creates again.
        """
        policy = self.policy

        def send() -> requests.Response:
            self._wait_for_window()
            try:
                response = request()
            except TRANSIENT_HTTP_ERRORS as exc:
                if not repeatable and not isinstance(exc, requests.ConnectTimeout):
                    raise _unsure(describe(exc)) from None
                raise
            if (not repeatable and response.status_code in policy.statuses
                    and response.status_code != 429):
                raise _unsure(f"HTTP {response.status_code}")
            policy.check(response, now=self.clock())
            self._note_window(response)
            return response

        try:
            return policy.call(send, sleep=self.sleep)
        except GaveUp as exc:
            raise OperationError(f"DigitalOcean's API did not answer after {exc.tries} tries "
                                 f"({exc.last}); check status.digitalocean.com, microfetch "
                                 "tries again") from None

    def _note_window(self, response: requests.Response) -> None:
        """An answer saying no request is left: hold every request until the window resets."""
        remaining = response.headers.get("ratelimit-remaining", "")
        if remaining.strip() not in ("0", "-0"):
            return
        wait = self.policy.bounded(retry.reset_seconds(response.headers.get("ratelimit-reset", ""),
                                                 self.clock()))
        with self.lock:
            self.paused_until = max(self.paused_until, self.clock() + wait)

    def _wait_for_window(self) -> None:
        with self.lock:
            wait = min(self.paused_until - self.clock(), MAX_RETRY_AFTER)
        if wait > 0:
            self.sleep(wait)


def _unsure(last: str) -> UnclearAnswer:
    return UnclearAnswer(f"DigitalOcean's API failed after the request was sent ({last}); it "
                         "may have acted on it, so it is not repeated blindly")


class _Retrying:
    """Mixed into the library's classes: our timeout and retries around every request."""

    policy: Pacer

    def get_timeout(self) -> float:
        return self.policy.timeout

    def _BaseAPI__perform_request(self, url: str, type: str = "GET",
                                  params: dict | None = None) -> requests.Response:
        return self.policy.perform(
            lambda: BaseAPI._BaseAPI__perform_request(self, url, type, params),
            repeatable=type != "POST")


class _Manager(_Retrying, digitalocean.Manager):
    pass


class _Droplet(_Retrying, digitalocean.Droplet):
    pass


@dataclass(frozen=True)
class DropletInfo:
    id: int
    name: str
    status: str
    ipv4: str
    created_at: datetime | None
    tags: tuple[str, ...]


def _info(droplet: Any) -> DropletInfo:
    public = [n["ip_address"] for n in (droplet.networks or {}).get("v4", [])
              if n.get("type") == "public"]
    return DropletInfo(int(droplet.id), droplet.name, droplet.status, public[0] if public else "",
                       parse_time(droplet.created_at or ""), tuple(droplet.tags or ()))


def explain(exc: Exception, what: str) -> OperationError:
    """The API's message and what to do about it."""
    message = str(exc) or type(exc).__name__
    if LIMIT_MESSAGE in message.lower():
        return QuotaReached(f"{what}: DigitalOcean said: {message}. The account's droplet "
                            "limit is reached; microfetch waits for a free slot and tries again "
                            "(ask DigitalOcean support to raise the limit if this lasts)")
    if "authenticate" in message.lower() or isinstance(exc, digitalocean.TokenError):
        return OperationError(
            f"{what}: DigitalOcean refused the token ({message}). Create a read/write token "
            "at cloud.digitalocean.com/account/api/tokens and set DIGITALOCEAN_TOKEN",
            permanent=True)
    return OperationError(f"{what}: DigitalOcean said: {message}. Check the droplet settings "
                          "(MICROFETCH_DO_REGION, _SIZE, _IMAGE, _SSH_KEYS)", permanent=True)


class DoApi:
    """Create, read, list, destroy droplets and read sizes, with retries and clear errors.

    Every library object gets ``base_url`` (``MICROFETCH_DO_API_URL``) as its end point: the
    ones built here and the ones the library hands back (``Manager.get_all_droplets`` builds
    its ``Droplet`` objects with the library's default end point, the real API).
    """

    def __init__(self, token: str, timeout: float, sleep: Callable[[float], None] = time.sleep,
                 retries: int = 5, base_url: str = DEFAULT_API_URL) -> None:
        self.token = token
        self.policy = Pacer(timeout, retries, sleep=sleep)
        # The library joins relative paths ("droplets/") onto the end point: it must end in /.
        self.end_point = base_url.rstrip("/") + "/"

    def _manager(self) -> _Manager:
        manager = _Manager(token=self.token, end_point=self.end_point)
        manager.policy = self.policy
        return manager

    def _droplet(self, **fields: Any) -> _Droplet:
        droplet = _Droplet(token=self.token, end_point=self.end_point, **fields)
        droplet.policy = self.policy
        return droplet

    def droplets_by_tag(self, tag: str) -> list[Any]:
        """The library's droplet objects, re-pointed at our end point before anyone uses them."""
        droplets = self._call(f"listing droplets tagged {tag}",
                              lambda: self._manager().get_all_droplets(tag_name=tag))
        for droplet in droplets:
            droplet.end_point = self.end_point
        return droplets

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (DataReadError, JSONReadError, digitalocean.TokenError) as exc:
            raise explain(exc, what) from None

    def create(self, *, name: str, region: str, size: str, image: str,
               ssh_keys: list[int | str], tags: list[str], user_data: str) -> int:
        droplet = self._droplet(name=name, region=region, image=image, size_slug=size,
                                ssh_keys=ssh_keys, tags=tags, user_data=user_data)
        self._call(f"creating droplet {name}", droplet.create)
        return int(droplet.id)

    def get(self, droplet_id: int) -> DropletInfo | None:
        """The droplet, or None when it no longer exists."""
        droplet = self._droplet(id=droplet_id)
        try:
            self._call(f"reading droplet {droplet_id}", droplet.load)
        except NotFoundError:
            return None
        return _info(droplet)

    def destroy(self, droplet_id: int) -> None:
        """Destroy a droplet; one that is already gone is fine."""
        droplet = self._droplet(id=droplet_id)
        try:
            self._call(f"destroying droplet {droplet_id}", droplet.destroy)
        except NotFoundError:
            return

    def by_tag(self, tag: str) -> list[DropletInfo]:
        """Every droplet with the tag, across all pages."""
        return [_info(d) for d in self.droplets_by_tag(tag)]

    def sizes(self) -> dict[str, dict[str, float]]:
        """Size slug -> price_hourly, disk (GB), transfer (TB a month) and vcpus."""
        sizes = self._call("reading /v2/sizes", lambda: self._manager().get_all_sizes())
        return {s.slug: {"price_hourly": float(s.price_hourly), "disk": float(s.disk),
                         "transfer": float(s.transfer), "vcpus": float(s.vcpus or 1)}
                for s in sizes}

    # the account and its firewalls ---------------------------------------------------------

    def _data(self, what: str, path: str, method: str = GET,
              params: dict[str, Any] | None = None) -> Any:
        return self._call(what, lambda: self._manager().get_data(path, type=method,
                                                                 params=params))

    def droplet_limit(self) -> int:
        """How many droplets the account may have at once (``/v2/account``)."""
        account = self._data("reading /v2/account", "account")
        return int(account["account"]["droplet_limit"])

    def droplet_count(self) -> int:
        """Droplets the account has now, of every install and every tool (one small page)."""
        data = self._data("counting droplets", "droplets", params={"page": 1, "per_page": 1})
        return int((data.get("meta") or {}).get("total", len(data.get("droplets") or [])))

    def firewalls(self, name: str) -> list[str]:
        """Ids of the Cloud Firewalls with this name."""
        data = self._data("listing firewalls", "firewalls")
        return [f["id"] for f in data.get("firewalls") or [] if f.get("name") == name]

    def create_firewall(self, name: str, tag: str, ssh_from: str) -> str:
        """A firewall on every droplet with ``tag``: SSH in from ``ssh_from`` only, all out."""
        everywhere = {"addresses": ["0.0.0.0/0", "::/0"]}
        body = {
            "name": name, "tags": [tag], "droplet_ids": [],
            "inbound_rules": [{"protocol": "tcp", "ports": "22",
                               "sources": {"addresses": [ssh_from]}}],
            "outbound_rules": [{"protocol": proto, "ports": "all" if proto != "icmp" else "",
                                "destinations": everywhere}
                               for proto in ("tcp", "udp", "icmp")],
        }
        data = self._data(f"creating firewall {name}", "firewalls", POST, body)
        return str(data["firewall"]["id"])

    def delete_firewall(self, firewall_id: str) -> None:
        """Delete a firewall; one already gone is fine."""
        try:
            self._data(f"deleting firewall {firewall_id}", f"firewalls/{firewall_id}", DELETE)
        except NotFoundError:
            return
