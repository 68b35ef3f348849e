"""The pages: dashboard, taxon page, and the admin forms (session + CSRF)."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from pydantic import BaseModel, ValidationError

from backend.add_taxa import add_taxa, summary
from backend.errors import UnknownTaxonError
from backend.registry import Registry, parse_taxon_id
from backend.settings import Settings
from backend.workers import WorkerStore
from web import schemas
from web.api import lookup, parse_id, problems_of
from web.auth import DISABLED, admin_token, csrf_token, page_admin_problem, token_matches
from web.openapi import document
from web.plots import runs_over_time
from web.security import local_path, redact, redact_state, server_paths
from web.views_data import (
    all_states,
    exclusion_counts,
    fetched_times,
    last_estimate,
    log_tail,
    status_counts,
    taxon_state,
)

bp = Blueprint("pages", __name__)
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
    return [h | {key: redact(h[key], paths) for key in ("old", "new")
                 if isinstance(h.get(key), str)} for h in changes]


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    paths = viewer_paths()
    states = [redact_state(state, paths) for state in all_states(settings())]
    series = {f"{s['taxonomy_id']} {s['scientific_name']}".strip():
              fetched_times(settings(), s["taxonomy_id"]) for s in states}
    return render_template("dashboard.html", taxa=states, plot=Markup(runs_over_time(series)))


@bp.get("/taxa/<taxon>")
def taxon_page(taxon: str) -> ResponseReturnValue:
    taxon_id = parse_id(taxon) or abort(404)
    registry = Registry.from_settings(settings())
    try:
        row = registry.get(taxon_id)
    except UnknownTaxonError:
        abort(404)
    history = registry.history(taxon_id, limit=2000)
    paths = viewer_paths()
    state = redact_state(taxon_state(settings(), row, history[-1]["time"] if history else "",
                                     WorkerStore.of(settings()).live()), paths)
    changes = [h for h in history if h["field"] in ("last_run_status", "stage", "row",
                                                    "needs_attention")][-30:]
    return render_template(
        "taxon.html", t=state, by_status=status_counts(settings(), taxon_id),
        by_reason=exclusion_counts(settings(), taxon_id),
        estimate=last_estimate(history), history=history_shown(list(reversed(changes)), paths),
        log=[redact(line, paths) for line in log_tail(settings(), taxon_id)],
        plot=Markup(runs_over_time({str(taxon_id): fetched_times(settings(), taxon_id)})))


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
    outcomes = add_taxa(Registry.from_settings(settings()), ids, lookup=lookup(),
                        actor="web:admin")
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
    registry = Registry.from_settings(settings())
    try:
        flash(*act(registry, taxon_id, sent))
    except UnknownTaxonError:
        abort(404)
    return redirect(url_for("pages.taxon_page", taxon=taxon_id))


def act(registry: Registry, taxon_id: int, sent: schemas.TaxonActionForm) -> tuple[str, str]:
    """Carry out one action of the taxon page; the message and its category."""
    if sent.action == "clear":
        registry.update(taxon_id, "web:admin", needs_attention="")
        return "needs_attention cleared", "ok"
    if sent.action == "priority":
        try:
            priority = schemas.SetPriority(priority=int(sent.priority.strip())).priority
        except (ValueError, ValidationError):
            limit = schemas.PRIORITY_LIMIT
            return f"priority must be a whole number from -{limit} to {limit}", "error"
        registry.update(taxon_id, "web:admin", priority=priority)
        return f"priority set to {priority}", "ok"
    from backend.collect import retry_runs

    return f"{retry_runs(settings(), taxon_id, 'web:admin')} runs pending again", "ok"
