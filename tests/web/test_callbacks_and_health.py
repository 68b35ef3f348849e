"""Worker callbacks, /healthz and /metrics through Flask's test client."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from backend.state.registry import Status
from backend.state.workers import Phase
from backend.timeutil import utc_now

from .conftest import TOKEN, WORKER, three_runs

DONE = {"status": "done", "runs_ok": 1, "runs_failed": 0, "bytes": 100,
        "finished_at": "2026-11-23T10:15:00Z"}


def post(site, body=DONE, token=TOKEN, name=WORKER):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return site.client.post(f"/api/workers/{name}/callback", json=body, headers=headers)


def snapshot(site):
    return site.store.get(WORKER).to_json(), site.registry.path.read_bytes()


def test_a_callback_with_the_right_token_marks_the_worker_done_and_wakes_the_collector(site):
    response = post(site)
    assert response.status_code == 200
    assert response.get_json() == {"worker": WORKER, "accepted": True}
    record = site.store.get(WORKER)
    assert record.phase is Phase.DONE and record.callback == DONE
    assert site.registry.get(562).last_run_status is Status.READY
    assert site.woken == [WORKER]


def test_a_repeated_callback_is_harmless(site):
    assert post(site).status_code == 200
    before = snapshot(site)
    assert post(site).status_code == 200
    assert snapshot(site)[1] == before[1]
    assert site.store.get(WORKER).phase is Phase.DONE


def test_a_wrong_or_missing_token_is_refused_and_changes_nothing(site):
    before = snapshot(site)
    for token in ("wrong", None, ""):
        response = post(site, token=token)
        assert response.status_code == 401
        assert "bearer token" in response.get_json()["error"]
    assert snapshot(site) == before


def test_an_unknown_worker_is_404_and_a_path_like_name_never_reaches_the_disk(site):
    assert post(site, name="mf-562-9-ffffff").status_code == 404
    assert post(site, name="..%2F..%2Fetc").status_code == 404


def test_a_body_that_is_not_the_contract_is_400_and_says_what_is_wrong(site):
    before = snapshot(site)
    cases = {
        "status must be": DONE | {"status": "finished"},
        "runs_ok must be": DONE | {"runs_ok": -1},
        "bytes must be": DONE | {"bytes": "100"},
        "finished_at must be": DONE | {"finished_at": "yesterday"},
        "JSON object": [1, 2],
    }
    for message, body in cases.items():
        response = post(site, body=body)
        assert response.status_code == 400, body
        assert message in response.get_json()["error"]
    assert snapshot(site) == before


def test_healthz_is_503_until_the_scheduler_runs_and_beats(site):
    response = site.client.get("/healthz")
    assert response.status_code == 503
    assert "the scheduler is not running" in response.get_json()["problems"]
    site.daemon.scheduler_running = True
    site.daemon.started_at = site.daemon.last_heartbeat = utc_now()
    response = site.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["taxa"] == 1


def test_healthz_reports_an_unreadable_registry(site):
    site.daemon.scheduler_running = True
    site.daemon.started_at = site.daemon.last_heartbeat = utc_now()
    site.registry.path.write_text("taxonomy_id,stage\nabc,check\n")
    response = site.client.get("/healthz")
    assert response.status_code == 503
    assert "registry is not readable" in response.get_json()["problems"][0]


def scrape(site) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics by its name and its sorted labels."""
    response = site.client.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def test_metrics_count_taxa_workers_runs_bytes_and_rejections(site):
    three_runs(site)
    post(site, token="wrong")
    metrics = scrape(site)
    assert metrics["microfetch_taxa"][(("status", "in progress"),)] == 1
    assert metrics["microfetch_live_workers"][(("backend", "local"),)] == 1
    assert metrics["microfetch_callback_rejections_total"][(("reason", "bad_token"),)] >= 1
    assert metrics["microfetch_taxon_runs"][(("status", "fetched"), ("taxonomy_id", "562"))] == 1
    assert metrics["microfetch_taxon_runs"][(("status", "excluded"), ("taxonomy_id", "562"))] == 1
    assert metrics["microfetch_runs"][(("status", "pending"),)] == 1
    assert metrics["microfetch_taxon_fetched_bytes"][(("taxonomy_id", "562"),)] == 30
    assert metrics["microfetch_taxon_wanted_bytes"][(("taxonomy_id", "562"),)] == 35
    assert metrics["microfetch_fetched_bytes"][()] == 30
    assert not [name for name in metrics if name.endswith("_created")]


def test_with_nothing_live_every_gauge_and_counter_is_present_at_zero(site):
    site.store.delete(WORKER)
    metrics = scrape(site)
    assert metrics["microfetch_live_workers"] == {
        (("backend", b),): 0 for b in ("digitalocean", "local", "ssh")}
    assert metrics["microfetch_taxa"][(("status", "error"),)] == 0
    # A process-wide counter: earlier tests may have counted failures, so only its presence.
    assert (("job", "collector"),) in metrics["microfetch_job_failures_total"]
    assert {labels for labels in metrics["microfetch_callback_rejections_total"]} == {
        (("reason", r),) for r in ("bad_body", "bad_token", "unknown_worker")}
    assert metrics["microfetch_runs"][(("status", "fetched"),)] == 0


def test_the_docs_list_every_metric_and_no_other(site):
    page = (Path(__file__).resolve().parents[2] / "docs" / "src" / "web.md").read_text()
    section = page[page.index("## Metrics"):page.index("## Upgrading")]
    documented = set(re.findall(r"^\| `(microfetch_\w+)", section, flags=re.MULTILINE))
    families = set()
    for family in text_string_to_metric_families(site.client.get("/metrics").get_data(
            as_text=True)):
        families.add(family.name + ("_total" if family.type == "counter" else ""))
    assert documented == families


def test_a_destroyed_workers_token_is_refused_and_changes_nothing(site):
    with site.store.edit(WORKER) as record:
        record.phase = Phase.DESTROYED
    site.registry.update(562, "test", last_run_status=Status.COMPLETE)
    before = snapshot(site)
    response = post(site)
    assert response.status_code == 401
    assert "destroyed" in response.get_json()["error"]
    assert snapshot(site) == before
    assert site.woken == []


def test_a_callback_body_over_16_kib_is_refused_with_413_and_changes_nothing(site):
    before = snapshot(site)
    response = post(site, body={**DONE, "padding": "x" * 20_000})
    assert response.status_code == 413
    assert snapshot(site) == before


def test_a_callback_with_non_ascii_digits_or_a_trailing_newline_in_its_time_is_refused(site):
    for finished_at in ("٢٠٢٦-11-23T10:15:00Z", "2026-11-23T10:15:00Z\n"):
        response = post(site, body={**DONE, "finished_at": finished_at})
        assert response.status_code == 400, finished_at
    assert site.store.get(WORKER).phase is Phase.RUNNING
