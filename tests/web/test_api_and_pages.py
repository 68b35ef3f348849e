"""The JSON API, admin actions (bearer and CSRF), pages, and the OpenAPI document."""

from __future__ import annotations

import re
from datetime import timedelta

from backend.errors import OperationError
from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.add_taxa import UnknownToEna
from backend.state.names import look_up_names
from backend.timeutil import utc_now
from web import create_app
from web.openapi import document

from .conftest import ADMIN, three_runs


def lookup(taxon_id: int) -> str:
    if taxon_id == 999999:
        raise UnknownToEna("ENA's taxonomy does not know 999999 (404 No results)")
    return {1280: "Staphylococcus aureus"}.get(taxon_id, "")


def admin(site):
    return {"Authorization": f"Bearer {ADMIN}"}


def test_get_taxa_and_one_taxon_give_state_stage_and_progress(site):
    three_runs(site)
    (taxon,) = site.client.get("/api/taxa").get_json()["taxa"]
    assert taxon["taxonomy_id"] == 562
    one = site.client.get("/api/taxa/562").get_json()
    assert one["state"] == "in progress" and one["stage"] == "wait"
    assert one["task_percent"] == 50.0
    assert one["runs"] == {"wanted": 2, "fetched": 1, "pending": 1, "assigned": 0,
                                "failed": 0, "excluded": 1}
    assert one["bytes_fetched"] == 30
    assert one["workers"][0]["name"].startswith("mf-562-")
    assert one["updated"].endswith("Z")
    assert site.client.get("/api/taxa/4242").status_code == 404
    assert site.client.get("/api/taxa/abc").status_code == 400


def test_adding_taxa_through_the_api_answers_at_once_and_names_come_in_the_background(site):
    response = site.client.post("/api/taxa", json={"taxonomy_ids": [1280, 562, 999999]},
                                headers=admin(site))
    assert response.status_code == 200
    results = {r["given"]: r for r in response.get_json()["results"]}
    assert results["1280"]["result"] == "added" and results["999999"]["result"] == "added"
    assert results["1280"]["detail"] == "name looked up in the background"
    assert results["562"]["result"] == "present"
    assert {r.taxonomy_id for r in site.registry.load()} == {562, 1280, 999999}
    history = site.registry.history(1280)
    assert history[-1]["actor"] == "api:admin"  # the history says which interface acted

    # The daemon's heartbeat looks the names up later, not the request.
    assert look_up_names(site.settings, site.registry, lookup, utc_now()) == "1 found, 1 unknown"
    assert site.registry.get(1280).scientific_name == "Staphylococcus aureus"
    parked = site.registry.get(999999).needs_attention
    assert "ENA's taxonomy does not know 999999" in parked
    assert "microfetch remove-taxa 999999" in parked
    assert look_up_names(site.settings, site.registry, lookup, utc_now()) == \
        "nothing to look up"


def test_names_are_asked_again_after_ena_did_not_answer(site):
    site.client.post("/api/taxa", json={"taxonomy_ids": [1280]}, headers=admin(site))

    def down(taxon_id: int) -> str:
        raise OperationError("ENA's taxonomy did not answer")

    now = utc_now()
    assert look_up_names(site.settings, site.registry, down, now) == "1 unreachable"
    assert site.registry.get(1280).needs_attention == ""  # an outage parks nothing
    assert look_up_names(site.settings, site.registry, lookup, now) == "nothing to look up"
    later = now + timedelta(minutes=11)
    assert look_up_names(site.settings, site.registry, lookup, later) == "1 found"


def test_a_batch_with_a_malformed_id_is_refused_whole_and_changes_nothing(site):
    before = site.registry.path.read_bytes()
    response = site.client.post("/api/taxa", json={"taxonomy_ids": [1280, -5]},
                                headers=admin(site))
    assert response.status_code == 400
    assert response.get_json()["problems"] == [
        "taxonomy_ids.1: Input should be greater than or equal to 1"]
    assert site.registry.path.read_bytes() == before


def test_admin_api_actions_need_the_token_and_change_nothing_without_it(site):
    before = site.registry.path.read_bytes()
    assert site.client.post("/api/taxa", json={"taxonomy_ids": [7]}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert site.client.post("/api/taxa/562/priority", json={"priority": 3},
                            headers=wrong).status_code == 401
    assert site.registry.path.read_bytes() == before
    assert site.client.post("/api/taxa/562/priority", json={"priority": 3},
                            headers=admin(site)).get_json()["priority"] == 3
    site.registry.update(562, needs_attention="disk full")
    assert site.client.post("/api/taxa/562/clear-attention",
                            headers=admin(site)).status_code == 200
    assert site.registry.get(562).needs_attention == ""
    assert site.client.post("/api/taxa/562/priority", json={"priority": "high"},
                            headers=admin(site)).status_code == 400


def test_retry_through_the_api_brings_failed_runs_back(site):
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1000009"] = Run("ERR1000009", status=RunStatus.FAILED, attempts=3)
        runs["ERR1000009"].exclude(Exclusion.FAILED_ATTEMPTS, "3 attempts failed")
    response = site.client.post("/api/taxa/562/retry", headers=admin(site))
    assert response.get_json()["pending_again"] == 1


def test_collect_now_asks_the_daemons_collector_and_needs_the_admin_token(site):
    assert site.client.post("/api/collect").status_code == 401
    assert site.woken == []
    response = site.client.post("/api/collect", headers=admin(site))
    assert (response.status_code, response.get_json()) == (202, {"queued": True})
    assert site.woken == [""]


def test_collect_now_without_a_daemon_says_what_to_run_instead(site):
    client = create_app(site.settings).test_client()
    response = client.post("/api/collect", headers=admin(site))
    assert response.status_code == 503
    assert "microfetch collect" in response.get_json()["error"]


def test_without_an_admin_token_configured_admin_actions_are_disabled(site, tmp_path):
    settings = site.settings.with_overrides(admin_token="")
    client = create_app(settings).test_client()
    response = client.post("/api/taxa", json={"taxonomy_ids": [7]},
                           headers={"Authorization": "Bearer "})
    assert response.status_code == 403
    assert "set MICROFETCH_ADMIN_TOKEN" in response.get_json()["error"]
    page = client.get("/").get_data(as_text=True)
    assert "Admin actions are disabled" in page


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_the_add_form_needs_a_signed_in_session_and_its_csrf_token(site):
    client = site.client
    assert client.post("/taxa", data={"ids": "1280"}).status_code == 403
    client.post("/admin/login", data={"token": "wrong"})
    assert 'id="add-ids"' not in client.get("/").get_data(as_text=True)
    client.post("/admin/login", data={"token": ADMIN})
    page = client.get("/").get_data(as_text=True)
    refused = client.post("/taxa", data={"ids": "1280", "csrf": "forged"})
    assert refused.status_code == 403
    assert "CSRF token" in refused.get_data(as_text=True)
    added = client.post("/taxa", data={"ids": "1280", "csrf": csrf_of(page)},
                        follow_redirects=True)
    assert "added 1280; name looked up in the background" in added.get_data(as_text=True)
    assert 1280 in {r.taxonomy_id for r in site.registry.load()}


def test_the_taxon_page_shows_counts_reasons_estimate_history_and_log(site):
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1000003"] = Run("ERR1000003")
        runs["ERR1000003"].exclude(Exclusion.LAYOUT, "SINGLE is not PAIRED")
    site.registry.note(562, "cost_estimate", {"text": "1 workers, 0.50 GB to fetch"})
    log = site.settings.log_dir / "562.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-23 started worker mf-562-0-abcdef\n")
    page = site.client.get("/taxa/562").get_data(as_text=True)
    assert "a library layout not in MICROFETCH_SELECT_LAYOUTS (e.g. single-end reads)" in page
    assert "1 workers, 0.50 GB to fetch" in page
    assert "started worker mf-562-0-abcdef" in page
    assert "cost_estimate set to" not in page  # an estimate reads as its text
    assert site.client.get("/taxa/4242").status_code == 404


def test_the_dashboard_lists_taxa_and_refreshes_from_the_api_without_reloading(site):
    page = site.client.get("/").get_data(as_text=True)
    assert 'data-taxon="562"' in page and "Escherichia coli" in page
    assert 'microfetch.poll("/api/overview"' in page and "setInterval(refresh" in page
    assert 'http-equiv="refresh"' not in page and "location.reload" not in page


def test_the_openapi_document_describes_every_route_and_no_other(site):
    def to_openapi(rule: str) -> str:
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)

    routes: dict[str, set[str]] = {}
    for rule in site.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        routes.setdefault(to_openapi(rule.rule), set()).update(
            m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    served = site.client.get("/openapi.json").get_json()
    assert served == document()
    documented = {path: set(ops) for path, ops in served["paths"].items()}
    assert routes == documented
    ids = [op["operationId"] for ops in served["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == 24
    taxon = served["paths"]["/api/taxa/{taxon}"]["get"]["parameters"][0]["schema"]
    assert taxon["type"] == "integer" and taxon["minimum"] == 1
