"""microfetch's web app: worker callbacks, health and metrics, dashboard and JSON API."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from backend.metrics import DaemonStatus
from backend.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, daemon: DaemonStatus | None = None,
               on_callback: Callable[[str], None] | None = None) -> Flask:
    """The app factory: the single seam between the web app and everything else."""
    app = Flask(__name__)
    app.config["MICROFETCH_SETTINGS"] = settings or load_settings()
    app.config["MICROFETCH_DAEMON"] = daemon or DaemonStatus()
    app.config["MICROFETCH_ON_CALLBACK"] = on_callback or (lambda name: None)

    from web import callbacks, health

    app.register_blueprint(callbacks.bp)
    app.register_blueprint(health.bp)
    return app
