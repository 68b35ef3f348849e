"""``POST /api/workers/<name>/callback``: a worker says it has finished.

The bearer token is compared in constant time with the SHA-256 in the worker record. A wrong
or missing token, an unknown worker or a malformed body is refused and changes nothing; a
repeated callback is harmless. A callback is a hint: the collector also finds ``DONE.json``.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from backend.metrics import CALLBACK_REJECTIONS
from backend.registry import Registry, Status
from backend.workers import NAME_PATTERN, Phase, WorkerStore, token_hash

bp = Blueprint("callbacks", __name__)
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def refuse(reason: str, status: int, message: str) -> ResponseReturnValue:
    CALLBACK_REJECTIONS.labels(reason).inc()
    return jsonify(error=message), status


def body_problem(body: Any) -> str:
    """What is wrong with a callback body; empty when it is the JSON of the contract."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if body.get("status") not in ("done", "failed"):
        return "status must be 'done' or 'failed'"
    for key in ("runs_ok", "runs_failed", "bytes"):
        value = body.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key} must be a whole number >= 0"
    if not isinstance(body.get("finished_at"), str) or not TIME.match(body["finished_at"]):
        return "finished_at must be a UTC time like 2026-11-23T10:15:00Z"
    return ""


@bp.post("/api/workers/<name>/callback")
def callback(name: str) -> ResponseReturnValue:
    settings = current_app.config["MICROFETCH_SETTINGS"]
    store = WorkerStore.of(settings)
    record = store.get(name) if NAME_PATTERN.match(name) else None
    if record is None:
        return refuse("unknown_worker", 404, f"no worker named {name!r}")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(token_hash(token), record.token_sha256):
        return refuse("bad_token", 401, "missing or wrong bearer token for this worker")
    body = request.get_json(silent=True)
    problem = body_problem(body)
    if problem:
        return refuse("bad_body", 400, f"callback body refused: {problem}")
    with store.edit(name) as current:
        current.callback = body
        if current.phase in (Phase.CLAIMED, Phase.STARTING, Phase.RUNNING):
            current.phase = Phase.DONE
    registry = Registry.from_settings(settings)
    with registry.transaction(f"worker:{name}") as table:
        row = table.get(record.taxon_id)
        if row is not None and row.last_run_status is Status.IN_PROGRESS:
            row.last_run_status = Status.READY
    current_app.config["MICROFETCH_ON_CALLBACK"](name)
    return jsonify(worker=name, accepted=True)
