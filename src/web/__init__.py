"""microfetch's web app: worker callbacks, health and metrics, dashboard and JSON API."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from backend.settings import Settings, load_settings
from backend.state.metrics import DaemonStatus
from web.auth import session_secret
from web.security import secure


def create_app(settings: Settings | None = None, *, daemon: DaemonStatus | None = None,
               on_callback: Callable[[str], None] | None = None) -> Flask:
    """The app factory: the single seam between the web app and everything else."""
    app = Flask(__name__)
    settings = settings or load_settings()
    app.config["MICROFETCH_SETTINGS"] = settings
    app.config.update(SECRET_KEY=session_secret(settings.admin_token),
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.config["MICROFETCH_DAEMON"] = daemon or DaemonStatus()
    app.config["MICROFETCH_ON_CALLBACK"] = on_callback or (lambda name: None)
    # Only a daemon can collect: the web asks its collector job to run, never runs rsync itself.
    app.config["MICROFETCH_CAN_COLLECT"] = on_callback is not None
    secure(app, behind_proxy=settings.behind_proxy)

    from web import api, callbacks, display, health, pages

    display.install(app)

    for blueprint in (callbacks.bp, health.bp, api.bp, pages.bp):
        app.register_blueprint(blueprint)
    return app
