"""The pages: the overview, a taxon's page, its runs, its exports (read-only), and the admin
forms (session + CSRF)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError

from backend.errors import UnknownTaxonError
from backend.settings import Settings
from backend.state.accessions import AccessionList, export_path
from backend.state.add_taxa import summary
from backend.state.admin import Admin, Interface, actor
from backend.state.exports import genomes_dir
from backend.state.registry import Registry, Taxon, parse_taxon_id
from backend.state.store import database_of
from backend.state.workers import WorkerStore
from backend.timeutil import utc_now
from web import schemas
from web.api import add_in_background, hide_paths, parse_id, problems_of
from web.auth import DISABLED, admin_token, csrf_token, page_admin_problem, token_matches
from web.openapi import document
from web.overview import last_cost_estimate, overview, worker_row
from web.runs_table import (
    EXCLUSION_WORDS,
    BadQuery,
    GoneCursor,
    Query,
    parse_query,
    runs_page,
)
from web.security import local_path, redact, redact_state, server_paths
from web.views_data import (
    all_states,
    change_text,
    exclusion_counts,
    interface_of,
    log_tail,
    registry_row,
    taxon_state,
)

bp = Blueprint("pages", __name__)
#: History entries per page of the taxon page (older ones a link away).
HISTORY_PAGE = 100
#: Runs the taxon page shows (the runs page has them all).
FIRST_RUNS = 10
#: Taxa the overview lists unless asked for all (most urgent first).
TAXA_SHOWN = 100
Form = TypeVar("Form", bound=BaseModel)


class BadForm(Exception):
    """A form post without a field it needs, or with a wrong value."""


@bp.errorhandler(BadForm)
def bad_form(exc: BadForm) -> ResponseReturnValue:
    return render_template("refused.html", problem=str(exc)), 400


def settings() -> Settings:
    return current_app.config["MICROFETCH_SETTINGS"]


def form(model: type[Form]) -> Form:
    try:
        return model.model_validate(request.form.to_dict())
    except ValidationError as exc:
        raise BadForm("the form is not complete: " + "; ".join(problems_of(exc))) from exc


@bp.app_context_processor
def admin_context() -> dict[str, object]:
    return {"admin_enabled": bool(admin_token()), "signed_in": bool(session.get("admin")),
            "csrf": csrf_token(), "disabled_text": DISABLED}


def viewer_paths() -> list[tuple[str, str]]:
    """The server paths to hide from this viewer: all of them unless an admin signed in."""
    return [] if session.get("admin") else server_paths(settings())


def history_shown(changes: list[dict[str, Any]], paths: list[tuple[str, str]]
                  ) -> list[dict[str, Any]]:
    """History entries in words: what changed, and through which interface."""
    return [h | {"change": redact(change_text(h), paths),
                 "interface": interface_of(h["actor"])} for h in changes]


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    paths = viewer_paths()
    states = [redact_state(state, paths) for state in all_states(settings(), run_errors=False)]
    view = overview(settings(), states, utc_now())
    hide_paths(view, paths)
    every = request.args.get("taxa")
    if every not in (None, "all"):
        raise BadForm("taxa must be `all` or left out")
    shown = states if every else sorted(states, key=urgency)[:TAXA_SHOWN]
    return render_template("dashboard.html", taxa=shown, taxa_count=len(states), o=view)


def urgency(state: dict[str, Any]) -> tuple[Any, ...]:
    """Parked taxa first, then failed, then those being fetched, then by priority."""
    order = {"error": 1, "warning": 2, "in progress": 3}
    return (not state["needs_attention"], order.get(state["state"], 4), -state["priority"],
            state["taxonomy_id"])


def known_taxon(taxon: str) -> Taxon:
    """The registry row of the path's taxon; 404 when malformed or not in the registry."""
    taxon_id = parse_id(taxon) or abort(404)
    try:
        return registry_row(settings(), taxon_id)
    except UnknownTaxonError:
        abort(404)


def history_before() -> int | None:
    text = request.args.get("before")
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 2**62:
        raise BadForm("before must be a history entry's id (a whole number)")
    return int(text)


@bp.get("/taxa/<taxon>")
def taxon_page(taxon: str) -> ResponseReturnValue:
    row = known_taxon(taxon)
    taxon_id = row.taxonomy_id
    before = history_before()
    registry = Registry.from_settings(settings())
    history = registry.history(taxon_id, limit=HISTORY_PAGE, before=before)
    latest = history if before is None else registry.history(taxon_id, limit=1)
    paths = viewer_paths()
    db = database_of(settings())
    state = redact_state(taxon_state(settings(), row, latest[-1]["time"] if latest else "",
                                     WorkerStore.of(settings()).live()), paths)
    workers = [worker_row(db, w, utc_now(), {}) for w in WorkerStore.of(settings()).live()
               if w.taxon_id == taxon_id]
    first = runs_page(db, taxon_id, Query(limit=FIRST_RUNS))
    return render_template(
        "taxon.html", t=state, counts=AccessionList.of(settings(), taxon_id).counts(),
        by_reason=exclusion_counts(settings(), taxon_id), words=EXCLUSION_WORDS,
        estimate=last_cost_estimate(db, taxon_id), workers=workers,
        history=history_shown(list(reversed(history)), paths),
        older=history[0]["id"] if len(history) == HISTORY_PAGE else None,
        log=[redact(line, paths) for line in log_tail(settings(), taxon_id)],
        runs=shown_runs(first.rows, paths), next_cursor=first.next_cursor,
        query=Query(limit=FIRST_RUNS), exports=exports_of(taxon_id))


def shown_runs(rows: list[dict[str, Any]], paths: list[tuple[str, str]]
               ) -> list[dict[str, Any]]:
    return [row | {"last_error": redact(row["last_error"], paths)} for row in rows]


def exports_of(taxon_id: int) -> dict[str, bool]:
    """Which of the taxon's files are written yet (the page links only those)."""
    return {"samplesheet": samplesheet_path(taxon_id).exists(),
            "accessions": export_path(settings().data_dir, taxon_id).exists()}


def samplesheet_path(taxon_id: int) -> Path:
    return genomes_dir(settings(), taxon_id) / "samplesheet.csv"


@bp.get("/taxa/<taxon>/runs")
def runs_table(taxon: str) -> ResponseReturnValue:
    row = known_taxon(taxon)
    try:
        query = parse_query(request.args.to_dict())
    except BadQuery as exc:
        raise BadForm(str(exc)) from None
    try:
        page = runs_page(database_of(settings()), row.taxonomy_id, query)
    except GoneCursor:
        abort(404)
    return render_template("runs.html", t=row, runs=shown_runs(page.rows, viewer_paths()),
                           next_cursor=page.next_cursor, query=page.query, note=page.note)


def csv_file(path: Path, name: str) -> ResponseReturnValue:
    """A written export, streamed read-only; server paths hidden from anonymous viewers."""
    if not path.is_file():
        abort(404)
    paths = viewer_paths()

    def lines() -> Iterator[str]:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                yield redact(line, paths)

    return Response(stream_with_context(lines()), mimetype="text/csv", headers={
        "Content-Disposition": f'inline; filename="{name}"'})


@bp.get("/taxa/<taxon>/samplesheet.csv")
def samplesheet(taxon: str) -> ResponseReturnValue:
    taxon_id = known_taxon(taxon).taxonomy_id
    return csv_file(samplesheet_path(taxon_id), f"{taxon_id}-samplesheet.csv")


@bp.get("/taxa/<taxon>/accessions.csv")
def accession_list(taxon: str) -> ResponseReturnValue:
    taxon_id = known_taxon(taxon).taxonomy_id
    return csv_file(export_path(settings().data_dir, taxon_id), f"{taxon_id}-accessions.csv")


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(document())


@bp.post("/admin/login")
def login() -> ResponseReturnValue:
    sent = form(schemas.LoginForm)
    if not admin_token():
        flash(DISABLED, "error")
    elif token_matches(sent.token):
        session.clear()  # a fresh session (and CSRF token) for the signed-in admin
        session["admin"] = True
        flash("signed in", "ok")
    else:
        flash("that is not the admin token", "error")
    # Never the Referer, and `next` only when it is a path here: no open redirect.
    return redirect(local_path(sent.next, url_for("pages.dashboard")))


@bp.post("/admin/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("pages.dashboard"))


def refused(problem: str) -> ResponseReturnValue:
    return render_template("refused.html", problem=problem), 403


@bp.post("/taxa")
def add_from_form() -> ResponseReturnValue:
    problem = page_admin_problem()
    if problem:
        return refused(problem)
    ids = form(schemas.AddTaxaForm).ids.replace(",", " ").split()
    if not any(well_formed(i) for i in ids):
        # Every id is malformed: say so at once, before any look-up or registry write.
        flash("give at least one taxonomy id, e.g. 562" if not ids else
              "no taxonomy id in " + " ".join(ids[:20]) + ": nothing changed", "error")
        return redirect(url_for("pages.dashboard"))
    outcomes = add_in_background(ids, 0, Interface.WEB)
    for outcome in outcomes:
        flash(outcome.line(), "error" if outcome.result == "rejected" else "ok")
    flash(summary(outcomes), "ok")
    return redirect(url_for("pages.dashboard"))


def well_formed(text: str) -> bool:
    try:
        parse_taxon_id(text)
    except ValueError:
        return False
    return True


@bp.post("/taxa/<taxon>/action")
def taxon_action(taxon: str) -> ResponseReturnValue:
    problem = page_admin_problem()
    if problem:
        return refused(problem)
    taxon_id = parse_id(taxon) or abort(404)
    sent = form(schemas.TaxonActionForm)
    try:
        flash(*act(taxon_id, sent))
    except UnknownTaxonError:
        abort(404)
    return redirect(url_for("pages.taxon_page", taxon=taxon_id))


def act(taxon_id: int, sent: schemas.TaxonActionForm) -> tuple[str, str]:
    """Carry out one action of the taxon page; the message and its category."""
    admin = Admin(settings(), actor(Interface.WEB, "admin"))
    if sent.action == "clear":
        admin.clear(taxon_id)
        return "needs_attention cleared", "ok"
    if sent.action == "priority":
        try:
            priority = schemas.SetPriority(priority=int(sent.priority.strip())).priority
        except (ValueError, ValidationError):
            limit = schemas.PRIORITY_LIMIT
            return f"priority must be a whole number from -{limit} to {limit}", "error"
        admin.set_priority(taxon_id, priority)
        return f"priority set to {priority}", "ok"
    return f"{admin.retry(taxon_id)} runs pending again", "ok"
