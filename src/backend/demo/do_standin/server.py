"""The stand-in's HTTP face: the subset of DigitalOcean's API v2 that microfetch uses.

``/v2/account``, ``/v2/account/keys``, ``/v2/sizes``, droplets (create 202, get, list by
``tag_name`` with ``page``/``per_page`` and ``links.pages``, delete 204) and firewalls (create,
get, list, delete). Every API answer carries ``ratelimit-limit``, ``ratelimit-remaining`` and
``ratelimit-reset``; a wrong bearer token answers 401 as DigitalOcean does. Beside the API,
``GET /_standin/ledger`` and ``POST /_standin/faults`` serve tests and people.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from typing import Any

from backend.demo.do_standin.cloud import REGIONS, SIZES, ApiError, Cloud, Droplet
from backend.demo.do_standin.ledger import render
from backend.timeutil import format_time

RATE_LIMIT = 5000  # requests an hour, as DigitalOcean allows a token
DEFAULT_PER_PAGE, MAX_PER_PAGE = 20, 200
MAX_RECORDED = 100_000
DROPLET = re.compile(r"^/v2/droplets/(\d+)$")
FIREWALL = re.compile(r"^/v2/firewalls/([0-9a-f-]+)$")


class DoStandIn:
    """The server; ``start()`` binds 127.0.0.1 on a free port and serves in a thread."""

    def __init__(self, cloud: Cloud | None = None, *, max_per_page: int = MAX_PER_PAGE) -> None:
        self.cloud = cloud or Cloud()
        self.max_per_page = max_per_page
        # What was asked, newest last; bounded, as a rehearsal may run for days.
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)
        self.remaining, self.window_reset = RATE_LIMIT, int(time.time()) + 3600
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base + "/v2"

    def settings_env(self) -> dict[str, str]:
        """The settings that point microfetch's digitalocean backend at this stand-in."""
        return {"MICROFETCH_BACKEND": "digitalocean", "DIGITALOCEAN_TOKEN": self.cloud.token,
                "MICROFETCH_DO_API_URL": self.api_url, "MICROFETCH_DO_REGION": REGIONS[0],
                "MICROFETCH_DO_SIZE": "s-1vcpu-1gb",
                # Its droplets are this machine, which installs nothing: no Nextflow to expect.
                "MICROFETCH_NEXTFLOW_VERSION": ""}

    def start(self, port: int = 0) -> DoStandIn:
        self._server = _QuietServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> str:
        """Stop serving and every droplet's sshd; returns the ledger as text, for printing."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.cloud.shutdown()
        return render(self.cloud.ledger())

    def ratelimit_headers(self) -> dict[str, str]:
        now = int(time.time())
        with self.cloud.lock:
            if now >= self.window_reset:
                self.remaining, self.window_reset = RATE_LIMIT, now + 3600
            self.remaining = max(0, self.remaining - 1)
        return {"ratelimit-limit": str(RATE_LIMIT), "ratelimit-remaining": str(self.remaining),
                "ratelimit-reset": str(self.window_reset)}

    # bodies ------------------------------------------------------------------------------

    def droplet_json(self, droplet: Droplet) -> dict[str, Any]:
        size = SIZES[droplet.size]
        v4 = [{"ip_address": droplet.machine.address, "netmask": "255.0.0.0",
               "gateway": "127.0.0.1", "type": "public"}] if droplet.status == "active" else []
        return {
            "id": droplet.id, "name": droplet.name, "memory": size["memory"],
            "vcpus": size["vcpus"], "disk": size["disk"], "locked": droplet.status == "new",
            "status": droplet.status, "kernel": None,
            "created_at": format_time(droplet.created_at), "features": ["droplet_agent"],
            "backup_ids": [], "snapshot_ids": [], "volume_ids": [],
            "image": {"slug": droplet.image, "distribution": droplet.image.split("-")[0]},
            "size_slug": droplet.size, "size": {"slug": droplet.size, **size},
            "networks": {"v4": v4, "v6": []},
            "region": {"slug": droplet.region, "name": droplet.region, "available": True},
            "tags": list(droplet.tags), "vpc_uuid": "",
        }

    def page(self, path: str, key: str, items: list[Any],
             params: dict[str, str]) -> dict[str, Any]:
        """One page of a list, with DigitalOcean's ``links.pages`` and ``meta.total``."""
        per_page = min(max(_int(params.get("per_page"), DEFAULT_PER_PAGE), 1), self.max_per_page)
        number = max(_int(params.get("page"), 1), 1)
        last = max(1, -(-len(items) // per_page))
        pages: dict[str, str] = {}

        def link(n: int) -> str:
            query = {k: v for k, v in params.items() if k not in ("page", "per_page")}
            query.update(page=str(n), per_page=str(per_page))
            return f"{self.base}{path}?{urllib.parse.urlencode(query)}"

        if number > 1:
            pages.update(first=link(1), prev=link(number - 1))
        if number < last:
            pages.update(next=link(number + 1), last=link(last))
        chunk = items[(number - 1) * per_page: number * per_page]
        return {key: chunk, "links": {"pages": pages} if pages else {},
                "meta": {"total": len(items)}}


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients hanging up mid-answer are part of the faults played here, not errors."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _handler(stand_in: DoStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    cloud = stand_in.cloud

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _handle(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            params = dict(urllib.parse.parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                body = None
            stand_in.requests.append({"method": method, "path": path, "params": params,
                                      "host": self.headers.get("Host"), "body": body})
            if path.startswith("/_standin/"):
                self._standin(method, path, body)
                return
            headers = stand_in.ratelimit_headers()
            try:
                self._api(method, path, params, body, headers)
            except ApiError as exc:
                self._json(exc.status, {"id": exc.error_id, "message": exc.message}, headers)

        def _api(self, method: str, path: str, params: dict[str, str], body: Any,
                 headers: dict[str, str]) -> None:
            if self.headers.get("Authorization") != f"Bearer {cloud.token}":
                raise ApiError(401, "unauthorized", "Unable to authenticate you.")
            reset = cloud.take_rate_limit()
            if reset is not None:
                headers.update({"ratelimit-remaining": "0",
                                "ratelimit-reset": str(int(time.time()) + reset),
                                "Retry-After": str(reset)})
                raise ApiError(429, "too_many_requests", "API Rate limit exceeded.")
            if not isinstance(body, dict):
                raise ApiError(400, "bad_request", "The request body is not a JSON object.")
            droplet, firewall = DROPLET.match(path), FIREWALL.match(path)
            if (method, path) == ("GET", "/v2/account"):
                self._json(200, {"account": {
                    "droplet_limit": cloud.droplet_limit, "floating_ip_limit": 3,
                    "email": "lab@example.org", "uuid": "standin", "email_verified": True,
                    "status": "active", "status_message": ""}}, headers)
            elif (method, path) == ("GET", "/v2/account/keys"):
                self._json(200, stand_in.page(path, "ssh_keys", list(cloud.keys.values()),
                                              params), headers)
            elif (method, path) == ("GET", "/v2/sizes"):
                sizes = [{"slug": slug, **size, "regions": list(REGIONS), "available": True}
                         for slug, size in SIZES.items()]
                self._json(200, stand_in.page(path, "sizes", sizes, params), headers)
            elif (method, path) == ("POST", "/v2/droplets"):
                self._create(body, headers)
            elif (method, path) == ("GET", "/v2/droplets"):
                droplets = [stand_in.droplet_json(d) for d in cloud.tagged(params.get("tag_name"))]
                self._json(200, stand_in.page(path, "droplets", droplets, params), headers)
            elif droplet and method == "GET":
                self._json(200, {"droplet": stand_in.droplet_json(
                    cloud.get(int(droplet[1])))}, headers)
            elif droplet and method == "DELETE":
                cloud.destroy(int(droplet[1]))
                self._send(204, b"", headers)
            else:
                self._firewalls(method, path, firewall, params, body, headers)

        def _firewalls(self, method: str, path: str, firewall: re.Match | None,
                       params: dict[str, str], body: dict[str, Any],
                       headers: dict[str, str]) -> None:
            if (method, path) == ("POST", "/v2/firewalls"):
                self._json(202, {"firewall": cloud.create_firewall(body)}, headers)
            elif (method, path) == ("GET", "/v2/firewalls"):
                self._json(200, stand_in.page(path, "firewalls", list(cloud.firewalls.values()),
                                              params), headers)
            elif firewall and method == "GET" and firewall[1] in cloud.firewalls:
                self._json(200, {"firewall": cloud.firewalls[firewall[1]]}, headers)
            elif firewall and method == "DELETE":
                cloud.delete_firewall(firewall[1])
                self._send(204, b"", headers)
            else:
                raise ApiError(404, "not_found",
                               "The resource you were accessing could not be found.")

        def _create(self, body: dict[str, Any], headers: dict[str, str]) -> None:
            droplet, fault = cloud.create(body)
            delay = cloud.take_answer_delay()
            if delay:  # made, not yet said: a client killed meanwhile never learns of it
                time.sleep(delay)
            if fault == "drop":  # the droplet exists, the client never hears of it
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault in ("500", "504"):
                raise ApiError(int(fault), "server_error",
                               "Server was unable to give you a response.")
            self._json(202, {"droplet": stand_in.droplet_json(droplet), "links": {"actions": [
                {"id": droplet.id + 33640602, "rel": "create",
                 "href": f"{stand_in.api_url}/actions/{droplet.id + 33640602}"}]}}, headers)

        def _standin(self, method: str, path: str, body: Any) -> None:
            if (method, path) == ("GET", "/_standin/ledger"):
                self._json(200, cloud.ledger(), {})
            elif (method, path) == ("POST", "/_standin/faults") and isinstance(body, dict):
                try:
                    apply_fault(cloud, body)
                except (ApiError, ValueError, KeyError, TypeError) as exc:
                    self._json(400, {"id": "bad_request", "message": str(exc)}, {})
                    return
                self._json(200, {"ok": True}, {})
            else:
                self._json(404, {"id": "not_found", "message": f"no {method} {path}"}, {})

        def _json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            self._send(status, json.dumps(body).encode(), headers, "application/json")

        def _send(self, status: int, body: bytes, headers: dict[str, str],
                  kind: str = "application/json") -> None:
            self.send_response(status)
            if body:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def apply_fault(cloud: Cloud, body: dict[str, Any]) -> None:
    """``POST /_standin/faults`` with ``{"fault": …}``: the same faults as the Python API.

    ``create_500``, ``create_504``, ``create_drop``, ``create_422`` (``count``); ``429``
    (``count``, ``reset_seconds``); ``slow_activation``, ``lag_listing``, ``delay_answer``,
    ``late_bootstrap`` (``seconds``, ``count``); ``droplet_limit``
    (``limit``); ``kill`` and ``reboot`` (``droplet``).
    """
    fault, count = str(body["fault"]), int(body.get("count", 1))
    if fault.startswith("create_"):
        cloud.fail_create(fault.removeprefix("create_"), count)
    elif fault == "429":
        cloud.rate_limit(count, int(body.get("reset_seconds", 2)))
    elif fault == "slow_activation":
        cloud.slow_activation(float(body["seconds"]), count)
    elif fault in ("lag_listing", "delay_answer", "late_bootstrap"):
        getattr(cloud, fault)(float(body["seconds"]), count)
    elif fault == "droplet_limit":
        cloud.droplet_limit = int(body["limit"])
    elif fault in ("kill", "reboot"):
        getattr(cloud, fault)(int(body["droplet"]))
    else:
        raise ValueError(f"unknown fault {fault!r}")
