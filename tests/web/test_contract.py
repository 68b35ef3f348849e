"""The API contract: bodies of the wrong type are refused and change nothing, and schemathesis,
run against the live app on a loopback port, finds no answer that breaks /openapi.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.timeutil import utc_now

from .conftest import ADMIN, serving

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
BEARER = {"Authorization": f"Bearer {ADMIN}"}


def snapshot(site) -> bytes:
    return site.registry.path.read_bytes()


@pytest.mark.parametrize("body", [
    {"taxonomy_ids": [1280], "priority": True},
    {"taxonomy_ids": [1280], "priority": 1e23},
    {"taxonomy_ids": [1280], "priority": "5"},
    {"taxonomy_ids": [1280], "priority": 10**30},
    {"taxonomy_ids": [{}]},
    {"taxonomy_ids": ["1280"]},
    {"taxonomy_ids": [True]},
    {"taxonomy_ids": [1280.5]},
    {"taxonomy_ids": [0]},
    {"taxonomy_ids": []},
    {"taxonomy_ids": [1280], "priorty": 5},
    {"taxonomy_ids": "1280"},
    [1280],
    None,
])
def test_adding_taxa_with_a_body_of_the_wrong_type_is_400_and_changes_nothing(site, body):
    site.app.config["MICROFETCH_LOOKUP"] = lambda taxon: "Staphylococcus aureus"
    before = snapshot(site)
    response = site.client.post("/api/taxa", data=json.dumps(body), headers=BEARER,
                                content_type="application/json")
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["problems"]
    assert snapshot(site) == before


@pytest.mark.parametrize("body", [{"priority": True}, {"priority": 1e23}, {"priority": "5"},
                                  {"priority": 1.5}, {}, {"priority": 5, "extra": 1}])
def test_setting_a_priority_of_the_wrong_type_is_400_and_changes_nothing(site, body):
    before = snapshot(site)
    response = site.client.post("/api/taxa/562/priority", json=body, headers=BEARER)
    assert response.status_code == 400
    assert snapshot(site) == before


def test_a_body_that_is_not_json_is_400_and_says_to_send_json(site):
    response = site.client.post("/api/taxa/562/priority", data="priority=5", headers=BEARER)
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.get_json()["error"]
    broken = site.client.post("/api/taxa/562/priority", data="{", headers=BEARER,
                              content_type="application/json")
    assert broken.status_code == 400


@pytest.mark.parametrize("taxon", ["0", "-5", "+562", "abc", "562.0", "99999999999", "٥٦٢"])
def test_a_path_taxon_that_is_not_a_taxonomy_id_is_400(site, taxon):
    assert site.client.get(f"/api/taxa/{taxon}").status_code == 400
    assert site.client.post(f"/api/taxa/{taxon}/priority", json={"priority": 1},
                            headers=BEARER).status_code == 400


def with_runs(site) -> None:
    """Taxon 562 with a fetched, a pending and an excluded run: answers with every field."""
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1000001"] = Run("ERR1000001", status=RunStatus.FETCHED, fastq_bytes=(10, 20),
                                 fetched_at=utc_now())
        runs["ERR1000002"] = Run("ERR1000002", fastq_bytes=(5,))
        runs["ERR1000003"] = Run("ERR1000003")
        runs["ERR1000003"].exclude(Exclusion.PLATFORM, "LS454 is not ILLUMINA")


def test_an_integer_written_with_a_zero_fraction_is_the_integer_as_json_schema_says(site):
    site.app.config["MICROFETCH_LOOKUP"] = lambda taxon: "Staphylococcus aureus"
    response = site.client.post("/api/taxa", json={"taxonomy_ids": [1280.0], "priority": 2.0},
                                headers=BEARER)
    assert response.status_code == 200
    assert site.registry.get(1280).priority == 2


def test_schemathesis_finds_no_failure_against_the_live_app(site, tmp_path):
    with_runs(site)
    # A healthy daemon: /healthz's 503 is tested on its own, and would count as a server error.
    site.daemon.scheduler_running = True
    site.daemon.started_at = site.daemon.last_heartbeat = utc_now()
    site.app.config["MICROFETCH_LOOKUP"] = lambda taxon: f"taxon {taxon}"
    with serving(site.app) as url:
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all",
             "--max-examples", "30", "--seed", "20261129", "--generation-database", "none",
             "--workers", "1", "--no-color", "--request-timeout", "20",
             "--header", f"Authorization: Bearer {ADMIN}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    # Every operation but GET /openapi.json, which schemathesis leaves out as the schema's own.
    assert re.search(r"Operations: +23 selected / 23 total", result.stdout), result.stdout


DONE = {"status": "done", "runs_ok": 1, "runs_failed": 0, "bytes": 100,
        "finished_at": "2026-11-23T10:15:00Z"}


@pytest.mark.parametrize("body", [
    DONE, DONE | {"status": "failed"}, DONE | {"note": "extra keys are allowed"},
    DONE | {"status": "finished"}, DONE | {"runs_ok": -1}, DONE | {"bytes": "100"},
    DONE | {"bytes": True}, DONE | {"runs_failed": 1.5}, DONE | {"finished_at": "yesterday"},
    {k: v for k, v in DONE.items() if k != "bytes"},
    DONE | {"finished_at": "٢٠٢٦-11-23T10:15:00Z"},
    DONE | {"finished_at": DONE["finished_at"] + "\n"},
])
def test_the_documented_callback_body_is_the_one_callbacks_py_accepts(body):
    from web.callbacks import body_problem
    from web.schemas import WorkerDone

    try:
        WorkerDone.model_validate(body)
        documented = True
    except ValidationError:
        documented = False
    assert documented == (body_problem(json.dumps(body).encode()) == ""), body
