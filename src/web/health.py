"""``GET /healthz`` and ``GET /metrics``. Neither calls a cloud API."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from backend.errors import MicrofetchError
from backend.state.circuit import CircuitCollector, health_fields
from backend.state.metrics import COUNTERS, StateCollector
from backend.state.registry import Registry
from backend.timeutil import format_time, utc_now

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    settings = current_app.config["MICROFETCH_SETTINGS"]
    daemon = current_app.config["MICROFETCH_DAEMON"]
    problems = daemon.problems(utc_now())
    try:
        taxa = Registry.from_settings(settings).count()
    except (MicrofetchError, OSError) as exc:
        # The detail names server paths: it goes to the log, not to anonymous callers.
        logger.warning("healthz: the registry is not readable: {}", exc)
        problems.append("the registry is not readable (the daemon's log says why)")
        taxa = None
    body = {
        "status": "ok" if not problems else "unhealthy", "problems": problems,
        "scheduler_running": daemon.scheduler_running, "stopping": daemon.stopping,
        "last_heartbeat": format_time(daemon.last_heartbeat), "taxa": taxa,
        **health_fields(settings),
    }
    return jsonify(body), 200 if not problems else 503


@bp.get("/metrics")
def metrics() -> Response:
    state = CollectorRegistry()
    state.register(StateCollector(current_app.config["MICROFETCH_SETTINGS"]))
    state.register(CircuitCollector(current_app.config["MICROFETCH_SETTINGS"]))
    text = generate_latest(COUNTERS) + generate_latest(state)
    return Response(text, content_type=CONTENT_TYPE_LATEST)
