"""Service health as circuits in the state database: pauses that grow, probes, what pages read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backend.settings import load_settings
from backend.state.circuit import (
    CircuitCollector,
    Service,
    backoff,
    circuit_status,
    claim_probe,
    dispatch_paused,
    ena_answered,
    ena_failed,
    health_fields,
    record_file_host,
)
from backend.state.store import database_of

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    return load_settings({"MICROFETCH_DATA_DIR": str(tmp_path / "data"),
                          "MICROFETCH_OUTAGE_BACKOFF_SECONDS": "60",
                          "MICROFETCH_OUTAGE_BACKOFF_MAX_SECONDS": "600"})


def test_the_pause_doubles_with_each_failure_up_to_the_cap():
    pauses = [backoff(n, 60, 600).total_seconds() for n in (1, 2, 3, 4, 5, 6, 1000)]
    assert pauses == [60, 120, 240, 480, 600, 600, 600]
    assert backoff(1, 60, 10).total_seconds() == 60  # a cap below the base is the base


def test_an_outage_shows_since_when_how_often_and_the_next_try_then_closes(settings):
    ena_failed(settings, "ENA did not answer (ConnectionError)", T0)
    ena_failed(settings, "ENA did not answer (HTTP 503)", T0 + timedelta(minutes=1))

    state = circuit_status(settings, T0 + timedelta(minutes=2))["ena"]
    assert state == {
        "state": "open", "since": "2026-11-29T12:00:00Z", "failures": 2,
        "next_try": "2026-11-29T12:03:00Z", "last_error": "ENA did not answer (HTTP 503)",
        "paused": True,
        "summary": "ENA's portal unreachable since 2026-11-29T12:00:00Z (2 failed tries); "
                   "next try 2026-11-29T12:03:00Z",
    }
    assert health_fields(settings, T0)["services"]["file_host"]["state"] == "closed"

    before = ena_answered(settings, T0 + timedelta(minutes=3))
    assert before.failures == 2
    after = circuit_status(settings, T0 + timedelta(minutes=3))["ena"]
    assert after["state"] == "closed" and after["failures"] == 0 and not after["paused"]


def test_of_two_processes_asking_at_once_only_one_probes(settings):
    ena_failed(settings, "down", T0)
    database = database_of(settings)
    later = T0 + timedelta(minutes=5)

    with ThreadPoolExecutor(4) as pool:  # a connection per thread, as per process
        claims = list(pool.map(lambda _: claim_probe(database, Service.ENA, later, 60, 600),
                               range(4)))

    assert claims.count(True) == 1
    assert circuit_status(settings, later)["ena"]["state"] == "half-open"


def test_a_worker_whose_runs_all_failed_transiently_pauses_dispatch_until_a_probe(settings):
    assert dispatch_paused(settings, T0) is None
    record_file_host(settings, transient=0, ok=0, now=T0)  # content failures only: no word
    assert dispatch_paused(settings, T0) is None

    record_file_host(settings, transient=5, ok=0, now=T0)

    reason = dispatch_paused(settings, T0 + timedelta(seconds=30))
    assert reason == ("dispatch paused: the file host unreachable since 2026-11-29T12:00:00Z "
                      "(1 failed tries); next try 2026-11-29T12:01:00Z")
    assert dispatch_paused(settings, T0 + timedelta(minutes=1)) is None  # one worker probes
    assert dispatch_paused(settings, T0 + timedelta(minutes=1, seconds=1)) is not None

    record_file_host(settings, transient=2, ok=3, now=T0 + timedelta(minutes=2))
    assert dispatch_paused(settings, T0 + timedelta(minutes=2)) is None
    assert circuit_status(settings)["file_host"]["state"] == "closed"


def test_metrics_show_each_services_state_failures_and_next_try(settings):
    record_file_host(settings, transient=3, ok=0, now=T0)
    registry = CollectorRegistry()
    registry.register(CircuitCollector(settings))

    text = generate_latest(registry).decode()

    assert 'microfetch_service_state{service="file_host",state="open"} 1.0' in text
    assert 'microfetch_service_state{service="ena",state="closed"} 1.0' in text
    assert 'microfetch_service_state{service="ena",state="open"} 0.0' in text
    assert 'microfetch_service_failures{service="file_host"} 1.0' in text
    samples = {(s.name, s.labels.get("service")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("microfetch_service_next_try_timestamp_seconds", "file_host")] == \
        (T0 + timedelta(minutes=1)).timestamp()
    assert samples[("microfetch_service_next_try_timestamp_seconds", "ena")] == 0
