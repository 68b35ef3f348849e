"""``POST /api/workers/<name>/callback``: a worker says it has finished.

The bearer token is compared in constant time with the SHA-256 in the worker record. A wrong
or missing token, an unknown worker or a malformed body is refused and changes nothing; a
repeated callback is harmless. A callback is a hint: the collector also finds ``DONE.json``.
"""

from __future__ import annotations

import hmac
import json

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from backend.state.metrics import CALLBACK_REJECTIONS
from backend.state.registry import Registry
from backend.state.transitions import ready
from backend.state.workers import NAME_PATTERN, Phase, WorkerStore, token_hash
from web.schemas import WorkerDone

bp = Blueprint("callbacks", __name__)
#: DONE.json is a few hundred bytes; anything much larger is not one.
MAX_BODY_BYTES = 16 * 1024


def refuse(reason: str, status: int, message: str) -> ResponseReturnValue:
    CALLBACK_REJECTIONS.labels(reason).inc()
    return jsonify(error=message), status


def body_problem(raw: bytes) -> str:
    """What is wrong with a callback body; empty when it is the JSON of the contract."""
    try:
        WorkerDone.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if not where or first["type"] in ("model_type", "json_invalid"):
            return "the body must be a JSON object like DONE.json"
        what = first["msg"].removeprefix("Input should be ").removeprefix("String should ")
        return f"{where} must be {what}"
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
    if record.phase is Phase.DESTROYED:  # its token died with it
        return refuse("bad_token", 401, "this worker was destroyed; its token no longer works")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return refuse("bad_body", 413, f"a callback body is at most {MAX_BODY_BYTES} bytes")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return refuse("bad_body", 413, f"a callback body is at most {MAX_BODY_BYTES} bytes")
    problem = body_problem(raw)
    if problem:
        return refuse("bad_body", 400, f"callback body refused: {problem}")
    with store.edit(name) as current:
        if current.phase is Phase.DESTROYED:
            return refuse("bad_token", 401, "this worker was destroyed; its token no longer "
                                            "works")
        current.callback = json.loads(raw)
        if current.phase in (Phase.CLAIMED, Phase.STARTING, Phase.RUNNING):
            current.phase = Phase.DONE
    ready(Registry.from_settings(settings), record.taxon_id, f"worker:{name}")
    current_app.config["MICROFETCH_ON_CALLBACK"](name)
    return jsonify(worker=name, accepted=True)
