"""The pages: dashboard, taxon page, and the admin forms (session + CSRF)."""

from __future__ import annotations

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

from backend.add_taxa import add_taxa, summary
from backend.errors import UnknownTaxonError
from backend.registry import Registry
from backend.settings import Settings
from backend.workers import WorkerStore
from web.api import lookup, parse_id
from web.auth import DISABLED, admin_token, csrf_token, page_admin_problem, token_matches
from web.openapi import OPENAPI
from web.plots import runs_over_time
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


def settings() -> Settings:
    return current_app.config["MICROFETCH_SETTINGS"]


@bp.app_context_processor
def admin_context() -> dict[str, object]:
    return {"admin_enabled": bool(admin_token()), "signed_in": bool(session.get("admin")),
            "csrf": csrf_token(), "disabled_text": DISABLED}


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    states = all_states(settings())
    series = {f"{s['taxonomy_id']} {s['scientific_name']}".strip():
              fetched_times(settings(), s["taxonomy_id"]) for s in states}
    return render_template("dashboard.html", taxa=states, plot=Markup(runs_over_time(series)))


@bp.get("/taxa/<taxon>")
def taxon_page(taxon: str) -> ResponseReturnValue:
    taxon_id = parse_id(taxon)
    registry = Registry.from_settings(settings())
    try:
        row = registry.get(taxon_id) if taxon_id else abort(404)
    except UnknownTaxonError:
        abort(404)
    history = registry.history(taxon_id, limit=2000)
    state = taxon_state(settings(), row, history[-1]["time"] if history else "",
                        WorkerStore.of(settings()).live())
    changes = [h for h in history if h["field"] in ("last_run_status", "stage", "row",
                                                    "needs_attention")][-30:]
    return render_template(
        "taxon.html", t=state, by_status=status_counts(settings(), taxon_id),
        by_reason=exclusion_counts(settings(), taxon_id),
        estimate=last_estimate(history), history=list(reversed(changes)),
        log=log_tail(settings(), taxon_id),
        plot=Markup(runs_over_time({str(taxon_id): fetched_times(settings(), taxon_id)})))


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(OPENAPI)


@bp.post("/admin/login")
def login() -> ResponseReturnValue:
    if not admin_token():
        flash(DISABLED, "error")
    elif token_matches(request.form.get("token", "")):
        session["admin"] = True
        flash("signed in", "ok")
    else:
        flash("that is not the admin token", "error")
    return redirect(request.referrer or url_for("pages.dashboard"))


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
    ids = request.form.get("ids", "").replace(",", " ").split()
    if not ids:
        flash("give at least one taxonomy id, e.g. 562", "error")
        return redirect(url_for("pages.dashboard"))
    outcomes = add_taxa(Registry.from_settings(settings()), ids, lookup=lookup(),
                        actor="web:admin")
    for outcome in outcomes:
        flash(outcome.line(), "error" if outcome.result == "rejected" else "ok")
    flash(summary(outcomes), "ok")
    return redirect(url_for("pages.dashboard"))


@bp.post("/taxa/<taxon>/action")
def taxon_action(taxon: str) -> ResponseReturnValue:
    problem = page_admin_problem()
    if problem:
        return refused(problem)
    taxon_id = parse_id(taxon) or abort(404)
    registry = Registry.from_settings(settings())
    action = request.form.get("action")
    try:
        if action == "clear":
            registry.update(taxon_id, "web:admin", needs_attention="")
            flash("needs_attention cleared", "ok")
        elif action == "priority":
            priority = int(request.form.get("priority", ""))
            registry.update(taxon_id, "web:admin", priority=priority)
            flash(f"priority set to {priority}", "ok")
        elif action == "retry":
            from backend.collect import retry_runs

            flash(f"{retry_runs(settings(), taxon_id, 'web:admin')} runs pending again", "ok")
        else:
            flash(f"unknown action {action!r}", "error")
    except ValueError:
        flash("priority must be a whole number", "error")
    except UnknownTaxonError:
        abort(404)
    return redirect(url_for("pages.taxon_page", taxon=taxon_id))
