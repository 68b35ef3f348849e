"""Headers and cookies every answer carries: CSP with a nonce, no framing, HTTPS-only cookies.

The pages have one inline ``<style>`` and one inline ``<script>``; both carry the request's
nonce, so the policy needs no ``'unsafe-inline'`` and injected markup cannot run script.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from backend.settings import Settings

CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
       "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CHALLENGE = 'Bearer realm="microfetch"'


class HttpsOnlyWhenSecure(SecureCookieSessionInterface):
    """Marks the session cookie ``Secure`` whenever the request came over HTTPS.

    Behind a TLS proxy the scheme is the proxy's (``X-Forwarded-Proto``, trusted only with
    MICROFETCH_BEHIND_PROXY); served directly over plain HTTP on a laptop the cookie must
    stay usable, so a fixed SESSION_COOKIE_SECURE would not do.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return str(g.csp_nonce)


def add_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP.format(nonce=csp_nonce())
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if response.status_code == 401:  # RFC 9110: every 401 says how to authenticate
        response.headers.setdefault("WWW-Authenticate", CHALLENGE)
    return response


def local_path(target: str | None, fallback: str) -> str:
    """``target`` when it is a path on this site, else ``fallback`` (no open redirect).

    Browsers read ``\\`` as ``/`` and drop tabs and newlines, so ``/\\evil.example`` and
    ``/\\t/evil.example`` would leave the site: refuse them along with ``//host`` and URLs.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return fallback
    if any(c in target for c in "\\\t\r\n") or not target.isprintable():
        return fallback
    parts = urlsplit(target)
    return fallback if parts.scheme or parts.netloc else target


def secure(app: Flask, behind_proxy: bool) -> None:
    """Install the headers, the cookie policy and (behind a TLS proxy) ProxyFix."""
    if behind_proxy:
        # One proxy in front: trust the last hop's X-Forwarded-For/-Proto/-Host/-Prefix only.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1,  # type: ignore[method-assign]
                                x_host=1, x_prefix=1)
    app.session_interface = HttpsOnlyWhenSecure()
    app.after_request(add_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce


def server_paths(settings: Settings) -> list[tuple[str, str]]:
    """The server's own folders as they may appear in messages, and the setting naming each.

    Longest first, so that a log folder inside the data folder is named as the log folder.
    Relative paths are only matched once resolved: "data" alone is a common word.
    """
    named: dict[str, Path | None] = {
        "MICROFETCH_CSV": settings.csv_path, "MICROFETCH_DATA_DIR": settings.data_dir,
        "MICROFETCH_LOG_DIR": settings.log_dir, "MICROFETCH_HISTORY": settings.history_path,
        "MICROFETCH_PIPELINE_DIR": settings.pipeline_dir,
    }
    pairs = set()
    for name, path in named.items():
        if path is None:
            continue
        for form in {path, path.resolve()}:
            if form.is_absolute() and len(form.parts) > 1:
                pairs.add((str(form), "$" + name))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def redact(text: str, paths: list[tuple[str, str]]) -> str:
    """``text`` with each server folder replaced by the name of its setting."""
    for path, name in paths:
        text = text.replace(path, name)
    return text


def redact_state(state: dict[str, Any], paths: list[tuple[str, str]]) -> dict[str, Any]:
    """A taxon's state for anonymous eyes: its free-text fields without server paths."""
    return state | {key: redact(state[key], paths) for key in ("needs_attention", "last_error")
                    if isinstance(state.get(key), str)}
