"""Admin access: a bearer token for the API, a session plus CSRF token for the pages.

When MICROFETCH_ADMIN_TOKEN is unset every admin action is disabled, never open.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import current_app, jsonify, request, session
from flask.typing import ResponseReturnValue

from web.schemas import Error
from web.security import CHALLENGE

DISABLED = "admin actions are disabled: set MICROFETCH_ADMIN_TOKEN to enable them"


def admin_token() -> str:
    return current_app.config["MICROFETCH_SETTINGS"].admin_token


def token_matches(given: str) -> bool:
    expected = admin_token()
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def session_secret(token: str) -> str:
    """A stable signing key derived from the admin token (random when there is none)."""
    if not token:
        return secrets.token_hex(32)
    return hmac.new(token.encode(), b"microfetch-session", hashlib.sha256).hexdigest()


def api_admin(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """API views: ``Authorization: Bearer <admin token>``."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if not admin_token():
            return jsonify(Error(error=DISABLED).model_dump()), 403
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token_matches(token):
            return (jsonify(Error(error="missing or wrong admin bearer token").model_dump()),
                    401, {"WWW-Authenticate": CHALLENGE})
        return view(*args, **kwargs)

    return wrapped


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def page_admin_problem() -> str:
    """Why a page's admin form post is refused; empty when it may go ahead."""
    if not admin_token():
        return DISABLED
    if not session.get("admin"):
        return "sign in with the admin token first"
    if not csrf_matches(request.form.get("csrf", "")):
        return "the form's CSRF token is missing or stale: reload the page and try again"
    return ""


def csrf_matches(sent: str) -> bool:
    """Constant time, on bytes: compare_digest refuses non-ASCII str with a TypeError."""
    expected = session.get("csrf", "")
    return bool(sent) and isinstance(expected, str) and bool(expected) and \
        hmac.compare_digest(sent.encode(), expected.encode())
