"""The JSON API: taxa state, admin actions, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from backend.add_taxa import add_taxa, summary
from backend.errors import UnknownTaxonError
from backend.registry import Registry, parse_taxon_id
from backend.settings import Settings
from backend.workers import WorkerStore
from web.auth import api_admin
from web.views_data import all_states, taxon_state

bp = Blueprint("api", __name__, url_prefix="/api")


def settings() -> Settings:
    return current_app.config["MICROFETCH_SETTINGS"]


def lookup() -> Callable[[int], str] | None:
    """ENA's taxonomy look-up (tests may put another in the app config)."""
    if "MICROFETCH_LOOKUP" in current_app.config:
        return current_app.config["MICROFETCH_LOOKUP"]
    from backend.ena import taxonomy_lookup

    return taxonomy_lookup(settings())


def parse_id(text: str) -> int | None:
    try:
        return parse_taxon_id(text)
    except ValueError:
        return None


@bp.get("/taxa")
def list_taxa() -> ResponseReturnValue:
    return jsonify(taxa=all_states(settings()))


@bp.get("/taxa/<taxon>")
def get_taxon(taxon: str) -> ResponseReturnValue:
    taxon_id = parse_id(taxon)
    if taxon_id is None:
        return jsonify(error=f"{taxon!r} is not a taxonomy id (a positive whole number)"), 400
    registry = Registry.from_settings(settings())
    try:
        row = registry.get(taxon_id)
    except UnknownTaxonError as exc:
        return jsonify(error=str(exc)), 404
    history = registry.history(taxon_id, limit=1)
    return jsonify(taxon_state(settings(), row, history[-1]["time"] if history else "",
                               WorkerStore.of(settings()).live()))


@bp.post("/taxa")
@api_admin
def post_taxa() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    ids = body.get("taxonomy_ids") if isinstance(body, dict) else None
    priority = body.get("priority", 0) if isinstance(body, dict) else 0
    if not isinstance(ids, list) or not ids or not isinstance(priority, int):
        return jsonify(error='send {"taxonomy_ids": [562, 1280]} (and optionally '
                             '"priority": N)'), 400
    outcomes = add_taxa(Registry.from_settings(settings()), [str(i) for i in ids],
                        priority=priority, lookup=lookup(), actor="web:admin")
    return jsonify(results=[o.to_json() for o in outcomes], summary=summary(outcomes))


def _admin_change(taxon: str, change: Callable[[Registry, int], dict]) -> ResponseReturnValue:
    taxon_id = parse_id(taxon)
    if taxon_id is None:
        return jsonify(error=f"{taxon!r} is not a taxonomy id"), 400
    registry = Registry.from_settings(settings())
    try:
        return jsonify(change(registry, taxon_id))
    except UnknownTaxonError as exc:
        return jsonify(error=str(exc)), 404


@bp.post("/taxa/<taxon>/clear-attention")
@api_admin
def clear_attention(taxon: str) -> ResponseReturnValue:
    def change(registry: Registry, taxon_id: int) -> dict:
        registry.update(taxon_id, "web:admin", needs_attention="")
        return {"taxonomy_id": taxon_id, "needs_attention": ""}

    return _admin_change(taxon, change)


@bp.post("/taxa/<taxon>/priority")
@api_admin
def set_priority(taxon: str) -> ResponseReturnValue:
    body = request.get_json(silent=True)
    priority = body.get("priority") if isinstance(body, dict) else None
    if not isinstance(priority, int) or isinstance(priority, bool):
        return jsonify(error='send {"priority": N} with a whole number N'), 400

    def change(registry: Registry, taxon_id: int) -> dict:
        registry.update(taxon_id, "web:admin", priority=priority)
        return {"taxonomy_id": taxon_id, "priority": priority}

    return _admin_change(taxon, change)


@bp.post("/taxa/<taxon>/retry")
@api_admin
def retry(taxon: str) -> ResponseReturnValue:
    from backend.collect import retry_runs

    def change(registry: Registry, taxon_id: int) -> dict:
        return {"taxonomy_id": taxon_id,
                "pending_again": retry_runs(settings(), taxon_id, "web:admin")}

    return _admin_change(taxon, change)
