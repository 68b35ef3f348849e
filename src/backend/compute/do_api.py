"""The one wrapper around python-digitalocean.

The library sets no timeout (unless an environment variable says so) and retries nothing; a
429 and a 5xx both become a bare ``DataReadError``. A mixin wraps the library's single request
method, so every call (POST included) gets our timeout and bounded retries on 429 and 5xx that
honour ``Retry-After``; other errors surface with the API's message and what to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import digitalocean
import requests
from digitalocean.baseapi import BaseAPI, DataReadError, JSONReadError, NotFoundError

from backend.errors import OperationError
from backend.timeutil import parse_time

RETRY_STATUSES = {429, 500, 502, 503, 504}
DEFAULT_API_URL = "https://api.digitalocean.com/v2"
MAX_RETRY_AFTER = 120.0


@dataclass
class RetryPolicy:
    timeout: float
    retries: int = 5
    backoff: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def perform(self, request: Callable[[], requests.Response],
                repeatable: bool = True) -> requests.Response:
        """Send, retrying what is safe to repeat.

        A POST that failed after it was sent (a 5xx, a dropped connection, a read timeout) may
        have made the droplet: sending it again would make a second one, billed as long as the
        worker lives. So only a 429 or a connect timeout (refused before anything happened)
        repeats a POST; anything else raises at once, and the caller destroys by name.
        """
        last = ""
        for attempt in range(self.retries + 1):
            try:
                response = request()
            except (requests.ConnectionError, requests.Timeout) as exc:
                last, wait = f"{type(exc).__name__}: {exc}", None
                if not repeatable and not isinstance(exc, requests.ConnectTimeout):
                    raise _unsure(last) from None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                last, wait = f"HTTP {response.status_code}", response.headers.get("Retry-After")
                if not repeatable and response.status_code != 429:
                    raise _unsure(last)
            if attempt < self.retries:
                self.sleep(self._delay(attempt, wait))
        raise OperationError(f"DigitalOcean's API did not answer after {self.retries + 1} tries "
                             f"({last}); check status.digitalocean.com, microfetch tries again")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        try:
            return min(float(retry_after), MAX_RETRY_AFTER) if retry_after else \
                self.backoff * 2 ** attempt
        except ValueError:
            return self.backoff * 2 ** attempt


def _unsure(last: str) -> OperationError:
    return OperationError(f"DigitalOcean's API failed after the request was sent ({last}); it "
                          "may have acted on it, so it is not repeated. A droplet it made is "
                          "found by name and destroyed; microfetch tries again later")


class _Retrying:
    """Mixed into the library's classes: our timeout and retries around every request."""

    policy: RetryPolicy

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
        self.policy = RetryPolicy(timeout, retries, sleep=sleep)
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
