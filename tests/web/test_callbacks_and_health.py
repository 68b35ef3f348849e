"""Worker callbacks, /healthz and /metrics through Flask's test client."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from backend.registry import Status
from backend.timeutil import utc_now
from backend.workers import Phase

from .conftest import TOKEN, WORKER

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


def test_metrics_parse_and_count_taxa_workers_and_rejections(site):
    post(site, token="wrong")
    text = site.client.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    taxa = {s.labels["status"]: s.value for s in families["microfetch_taxa"].samples}
    assert taxa == {"in progress": 1}
    workers = {s.labels["backend"]: s.value for s in families["microfetch_live_workers"].samples}
    assert workers == {"local": 1}
    rejected = {s.labels["reason"]: s.value
                for s in families["microfetch_callback_rejections"].samples
                if s.name.endswith("_total")}
    assert rejected["bad_token"] >= 1
    assert "microfetch_job_runs" in families and "microfetch_bytes_fetched" in families
