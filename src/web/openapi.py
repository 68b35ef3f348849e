"""The OpenAPI description of the web app; a test checks it against the routes."""

from __future__ import annotations

from typing import Any

from backend import __version__


def _op(summary: str, responses: dict[str, str], admin: bool = False,
        body: dict[str, Any] | None = None, params: list[str] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {code: {"description": text} for code, text in responses.items()},
    }
    if admin:
        operation["security"] = [{"adminToken": []}]
    if body:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = [{"name": p, "in": "path", "required": True,
                                    "schema": {"type": "string"}} for p in params]
    return operation


DONE_BODY = {"type": "object", "required": ["status", "runs_ok", "runs_failed", "bytes",
                                             "finished_at"],
             "properties": {"status": {"enum": ["done", "failed"]},
                            "runs_ok": {"type": "integer", "minimum": 0},
                            "runs_failed": {"type": "integer", "minimum": 0},
                            "bytes": {"type": "integer", "minimum": 0},
                            "finished_at": {"type": "string", "example": "2026-11-23T10:15:00Z"}}}
ADMIN = {"401": "missing or wrong admin bearer token", "403": "admin actions are disabled"}
TAXON = ["taxon"]

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "microfetch", "version": __version__,
             "description": "Worker callbacks, taxa state and admin actions."},
    "components": {"securitySchemes": {
        "adminToken": {"type": "http", "scheme": "bearer",
                       "description": "MICROFETCH_ADMIN_TOKEN"},
        "workerToken": {"type": "http", "scheme": "bearer",
                        "description": "the worker's own callback token"}}},
    "paths": {
        "/api/workers/{name}/callback": {"post": _op(
            "A worker reports that its chunk is finished (the JSON of DONE.json)",
            {"200": "accepted (also when repeated)", "400": "body is not DONE.json's JSON",
             "401": "missing or wrong worker token", "404": "no such worker"},
            body=DONE_BODY, params=["name"]) | {"security": [{"workerToken": []}]}},
        "/api/taxa": {
            "get": _op("Every taxon's state", {"200": "the taxa"}),
            "post": _op("Add taxa, answered per id like add_taxa.py",
                        {"200": "one result per id", "400": "bad body"} | ADMIN, admin=True,
                        body={"type": "object", "required": ["taxonomy_ids"],
                              "properties": {"taxonomy_ids": {"type": "array",
                                                              "items": {"type": "integer"}},
                                             "priority": {"type": "integer"}}}),
        },
        "/api/taxa/{taxon}": {"get": _op(
            "One taxon's state, stage, progress percent, last error, updated",
            {"200": "the taxon", "400": "not a taxonomy id", "404": "not in the registry"},
            params=TAXON)},
        "/api/taxa/{taxon}/clear-attention": {"post": _op(
            "Clear needs_attention", {"200": "cleared", "404": "not in the registry"} | ADMIN,
            admin=True, params=TAXON)},
        "/api/taxa/{taxon}/priority": {"post": _op(
            "Change the priority", {"200": "changed", "400": "bad body"} | ADMIN, admin=True,
            body={"type": "object", "properties": {"priority": {"type": "integer"}}},
            params=TAXON)},
        "/api/taxa/{taxon}/retry": {"post": _op(
            "Failed runs back to pending", {"200": "how many", "404": "not in the registry"}
            | ADMIN, admin=True, params=TAXON)},
        "/openapi.json": {"get": _op("This document", {"200": "OpenAPI 3"})},
        "/healthz": {"get": _op("Scheduler running, heartbeat recent, registry readable",
                                {"200": "healthy", "503": "unhealthy, with the problems"})},
        "/metrics": {"get": _op("Prometheus text format", {"200": "metrics"})},
        "/": {"get": _op("The dashboard (HTML)", {"200": "page"})},
        "/taxa/{taxon}": {"get": _op("A taxon's page (HTML)", {"200": "page", "404": "unknown"},
                                     params=TAXON)},
        "/admin/login": {"post": _op("Sign in to the pages with the admin token (form)",
                                     {"302": "back to the page"})},
        "/admin/logout": {"post": _op("Sign out of the pages (form)", {"302": "back"})},
        "/taxa": {"post": _op("Add taxa from the dashboard form (CSRF)",
                              {"302": "back", "403": "not signed in or bad CSRF token"})},
        "/taxa/{taxon}/action": {"post": _op(
            "clear / priority / retry from the taxon page form (CSRF)",
            {"302": "back", "403": "not signed in or bad CSRF token"}, params=TAXON)},
    },
}
