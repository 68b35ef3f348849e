"""The JSON API: taxa state and admin actions, validated against ``web.schemas``.

Order of checks in an admin view: the token (401/403), then the path and body (400), then
the registry (404). A refused request changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError

from backend.errors import UnknownTaxonError
from backend.settings import Settings
from backend.state.add_taxa import Outcome, add_taxa, summary
from backend.state.admin import Admin, Interface, actor
from backend.state.names import request_lookups
from backend.state.registry import MAX_TAXON_ID, Registry
from backend.state.store import database_of
from backend.state.workers import WorkerStore
from backend.timeutil import utc_now
from web import schemas
from web.auth import api_admin
from web.charts import fetched_series
from web.overview import overview
from web.runs_table import BadQuery, GoneCursor, Query, parse_query, runs_page
from web.security import redact, redact_state, server_paths
from web.views_data import all_states, registry_row, registry_rows, taxon_state

bp = Blueprint("api", __name__, url_prefix="/api")
Model = TypeVar("Model", bound=BaseModel)
DIGITS = re.compile(r"[0-9]{1,10}")


class Invalid(Exception):
    """A request that is not the contract's; answered 400 with each problem."""

    def __init__(self, error: str, problems: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.problems = problems or []


@bp.errorhandler(Invalid)
def invalid(exc: Invalid) -> ResponseReturnValue:
    return jsonify(schemas.Error(error=exc.error, problems=exc.problems).model_dump()), 400


def settings() -> Settings:
    return current_app.config["MICROFETCH_SETTINGS"]


def parse_id(text: str) -> int | None:
    """A path's taxonomy id: ASCII digits only (no sign, no spaces), 1 to MAX_TAXON_ID."""
    if not DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_TAXON_ID else None


def path_id(text: str) -> int:
    taxon_id = parse_id(text)
    if taxon_id is None:
        raise Invalid("the path's taxon is not a taxonomy id",
                      [f"taxon: a whole number from 1 to {MAX_TAXON_ID}"])
    return taxon_id


def problems_of(exc: ValidationError) -> list[str]:
    """Each problem with its place, without echoing the value sent (it may be huge)."""
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)]


def json_body(model: type[Model]) -> Model:
    if not request.is_json:
        raise Invalid("send a JSON body with Content-Type: application/json")
    try:
        return model.model_validate_json(request.get_data())
    except ValidationError as exc:
        raise Invalid(f"the body is not a {model.__name__} (see /openapi.json)",
                      problems_of(exc)) from exc


def not_in_registry(taxon_id: int) -> ResponseReturnValue:
    # UnknownTaxonError's text names the registry's path: not for anonymous callers.
    message = f"taxon {taxon_id} is not in the registry; add it first"
    return jsonify(schemas.Error(error=message).model_dump()), 404


@bp.get("/taxa")
def list_taxa() -> ResponseReturnValue:
    paths = server_paths(settings())
    return jsonify(taxa=[redact_state(state, paths) for state in all_states(settings())])


@bp.get("/taxa/<taxon>")
def get_taxon(taxon: str) -> ResponseReturnValue:
    taxon_id = path_id(taxon)
    try:
        row = registry_row(settings(), taxon_id)
    except UnknownTaxonError:
        return not_in_registry(taxon_id)
    history = Registry.from_settings(settings()).history(taxon_id, limit=1)
    state = taxon_state(settings(), row, history[-1]["time"] if history else "",
                        WorkerStore.of(settings()).live())
    return jsonify(redact_state(state, server_paths(settings())))


@bp.post("/taxa")
@api_admin
def post_taxa() -> ResponseReturnValue:
    body = json_body(schemas.AddTaxa)  # every id's form, before any write
    outcomes = add_in_background(body.taxonomy_ids, body.priority, Interface.API)
    return answer_outcomes(outcomes)


def add_in_background(ids: list[int] | list[str], priority: int,
                      interface: Interface) -> list[Outcome]:
    """Add taxa now; their names are looked up by the daemon's heartbeat, not in the request
    (ENA can take tens of seconds). An id ENA does not know is then parked with the reason."""
    outcomes = add_taxa(Registry.from_settings(settings()), [str(i) for i in ids],
                        priority=priority, lookup=None, actor=actor(interface, "admin"))
    added = [o.taxon_id for o in outcomes if o.result == "added" and o.taxon_id is not None]
    if added:
        request_lookups(settings(), added, utc_now())
    return [replace(o, detail="name looked up in the background") if o.result == "added"
            else o for o in outcomes]


def answer_outcomes(outcomes: list[Outcome]) -> ResponseReturnValue:
    results = [schemas.Outcome.model_validate(o.to_json()) for o in outcomes]
    if all(o.result == "rejected" for o in outcomes):
        refused = schemas.AddTaxaRefused(error="every id was rejected; nothing changed",
                                         results=results, summary=summary(outcomes))
        return jsonify(refused.model_dump()), 422
    return jsonify(schemas.AddTaxaAnswer(results=results, summary=summary(outcomes))
                   .model_dump())


def _admin_change(taxon_id: int, change: Callable[[Admin, int], BaseModel]
                  ) -> ResponseReturnValue:
    """One admin action through the API (the history's actor says ``api:admin``)."""
    try:
        return jsonify(change(Admin(settings(), actor(Interface.API, "admin")), taxon_id)
                       .model_dump())
    except UnknownTaxonError:
        return not_in_registry(taxon_id)


@bp.post("/taxa/<taxon>/clear-attention")
@api_admin
def clear_attention(taxon: str) -> ResponseReturnValue:
    def change(admin: Admin, taxon_id: int) -> BaseModel:
        admin.clear(taxon_id)
        return schemas.AttentionCleared(taxonomy_id=taxon_id, needs_attention="")

    return _admin_change(path_id(taxon), change)


@bp.post("/taxa/<taxon>/priority")
@api_admin
def set_priority(taxon: str) -> ResponseReturnValue:
    taxon_id = path_id(taxon)
    priority = json_body(schemas.SetPriority).priority

    def change(admin: Admin, taxon_id: int) -> BaseModel:
        admin.set_priority(taxon_id, priority)
        return schemas.PrioritySet(taxonomy_id=taxon_id, priority=priority)

    return _admin_change(taxon_id, change)


@bp.post("/taxa/<taxon>/retry")
@api_admin
def retry(taxon: str) -> ResponseReturnValue:
    def change(admin: Admin, taxon_id: int) -> BaseModel:
        return schemas.Retried(taxonomy_id=taxon_id, pending_again=admin.retry(taxon_id))

    return _admin_change(path_id(taxon), change)


@bp.post("/collect")
@api_admin
def collect_now() -> ResponseReturnValue:
    """Ask the daemon's collector job to run now; the request thread never runs rsync."""
    if not current_app.config["MICROFETCH_CAN_COLLECT"]:
        return jsonify(schemas.Error(
            error="no daemon runs in this web app, so nothing can collect: run `microfetch "
                  "collect` on the server, or serve the app with `microfetch serve`")
                       .model_dump()), 503
    current_app.config["MICROFETCH_ON_CALLBACK"]("")
    return jsonify(schemas.CollectRequested(queued=True).model_dump()), 202


def hide_paths(answer: dict[str, Any], paths: list[tuple[str, str]]) -> None:
    """The overview's free-text errors without server paths (for anonymous eyes)."""
    for item in [*answer["workers"], *answer["ena"]["services"].values()]:
        item["last_error"] = redact(item["last_error"], paths)
    for circuit in answer["ena"]["services"].values():
        circuit["summary"] = redact(circuit["summary"], paths)


@bp.get("/overview")
def get_overview() -> ResponseReturnValue:
    paths = server_paths(settings())
    states = [redact_state(state, paths) for state in all_states(settings(), run_errors=False)]
    answer = overview(settings(), states, utc_now())
    hide_paths(answer, paths)
    return jsonify(schemas.Overview.model_validate(answer).model_dump())


@bp.get("/fetched")
def get_fetched() -> ResponseReturnValue:
    names = {row.taxonomy_id: row.scientific_name
             for row in registry_rows(settings())}
    return jsonify(fetched_series(database_of(settings()), names))


def known_taxon(taxon: str) -> tuple[int, str] | None:
    """The path's taxon id and name; None when it is not in the registry (Invalid if malformed)."""
    taxon_id = path_id(taxon)
    try:
        return taxon_id, registry_row(settings(), taxon_id).scientific_name
    except UnknownTaxonError:
        return None


@bp.get("/taxa/<taxon>/fetched")
def get_taxon_fetched(taxon: str) -> ResponseReturnValue:
    found = known_taxon(taxon)
    if found is None:
        return not_in_registry(path_id(taxon))
    taxon_id, name = found
    return jsonify(fetched_series(database_of(settings()), {taxon_id: name}, taxon_id))


def runs_query() -> Query:
    try:
        return parse_query(request.args.to_dict())
    except BadQuery as exc:
        raise Invalid("the query is not one the runs table takes", [str(exc)]) from None


@bp.get("/taxa/<taxon>/runs")
def get_runs(taxon: str) -> ResponseReturnValue:
    found = known_taxon(taxon)
    query = runs_query()
    if found is None:
        return not_in_registry(path_id(taxon))
    try:
        page = runs_page(database_of(settings()), found[0], query)
    except GoneCursor as exc:
        return jsonify(schemas.Error(error=f"{exc}; start again from the first page")
                       .model_dump()), 404
    paths = server_paths(settings())
    for run in page.rows:
        run["last_error"] = redact(run["last_error"], paths)
    shown = page.query
    return jsonify(schemas.RunsPage(
        taxonomy_id=found[0], sort=shown.sort, order="desc" if shown.descending else "asc",
        q=shown.prefix, limit=shown.limit, runs=page.rows, next=page.next_cursor,
        note=page.note).model_dump())
