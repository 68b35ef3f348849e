"""The heartbeat through ENA outages and one bad taxon, called directly with the time passed in.

ENA is the stand-in on 127.0.0.1: stopped for an outage (connection refused), restarted on the
same port for the recovery, and made to drop the connection for one taxon's queries only.
The taxa here have no runs at ENA, so a pass ends after the check and no worker starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.demo.ena_standin import EnaData, EnaStandIn
from backend.jobs.heartbeat import Jobs
from backend.settings import Settings, load_settings
from backend.state.circuit import State, circuit_status, record_file_host
from backend.state.registry import Registry, Stage, Status, Taxon
from backend.state.turns import waiting, waits
from tests.conftest import cli_env

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class Answers(EnaData):
    """ENA's data, except that queries about ``dropped`` taxa lose the connection and
    queries about ``refused`` taxa are refused (HTTP 400), as ENA does for a bad query."""

    def __init__(self, dropped: set[int] = frozenset(), refused: set[int] = frozenset()):
        super().__init__()
        self.dropped, self.refused = set(dropped), set(refused)

    def matching(self, query: str) -> list[dict[str, str]] | None:
        taxon = int(query.split("(", 1)[1].split(")", 1)[0]) if "(" in query else 0
        if taxon in self.dropped:
            raise ConnectionAbortedError("the stand-in drops this taxon's answers")
        if taxon in self.refused:
            return None
        return super().matching(query)


@pytest.fixture
def ena():
    stand_in = EnaStandIn(Answers()).start()
    yield stand_in
    stand_in.stop()


def lab(tmp_path: Path, ena: EnaStandIn, *taxa: int, **env: str) -> Jobs:
    settings = load_settings({
        **ena.settings_env(), "MICROFETCH_CSV": str(tmp_path / "microfetch.csv"),
        "MICROFETCH_DATA_DIR": str(tmp_path / "data"), "MICROFETCH_ENA_RETRIES": "0",
        "MICROFETCH_OUTAGE_BACKOFF_SECONDS": "60", "MICROFETCH_OUTAGE_BACKOFF_MAX_SECONDS": "240",
        "MICROFETCH_TAXON_BACKOFF_SECONDS": "600", **env})
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("test") as table:
        for taxon in taxa:
            table[taxon] = Taxon(taxon)
    return Jobs.build(settings)


def searches(ena: EnaStandIn, taxon: int) -> int:
    """Checks of a taxon that reached ENA (each asks /count first)."""
    return sum(1 for r in ena.requests if r["path"].endswith("/count")
               and f"({taxon})" in r["params"].get("query", ""))


def ena_state(settings: Settings) -> dict:
    return circuit_status(settings, T0)["ena"]


def test_a_taxon_ena_fails_for_waits_its_turn_while_the_others_are_checked(tmp_path, ena):
    ena.data.dropped.add(666)
    jobs = lab(tmp_path, ena, 666, 562, 1280)

    outcomes = [jobs.heartbeat(T0 + i * MINUTE) for i in range(4)]

    assert outcomes[0].startswith("taxon 666: check failed; next try at 2026-11-29T12:10:00Z")
    assert searches(ena, 666) == 1
    assert waiting(jobs.settings, T0 + 3 * MINUTE) == {666: {
        "failures": 1, "next_try": "2026-11-29T12:10:00Z",
        "last_error": waiting(jobs.settings, T0)[666]["last_error"]}}
    assert "ENA did not answer" in waiting(jobs.settings, T0)[666]["last_error"]
    rows = {row.taxonomy_id: row for row in jobs.registry.load()}
    assert rows[562].last_checked and rows[1280].last_checked
    assert rows[666].needs_attention == "" and rows[666].last_run_status is Status.WARNING
    assert ena_state(jobs.settings)["state"] == "closed"  # ENA answered the others

    for minute in range(10, 60):  # its turns come after 10, 20, 40 minutes: a turn per wait
        jobs.heartbeat(T0 + minute * MINUTE)
    assert searches(ena, 666) == 3
    assert waits(jobs.settings)[666].failures == 3
    assert jobs.registry.get(666).needs_attention == ""

    ena.data.dropped.clear()
    jobs.heartbeat(T0 + 80 * MINUTE)
    assert jobs.registry.get(666).last_checked == T0 + 80 * MINUTE
    assert 666 not in waits(jobs.settings)


def test_an_outage_pauses_every_check_parks_nothing_and_checks_resume_after_it(tmp_path, ena):
    jobs = lab(tmp_path, ena, 562, 1280, 1639)
    port = ena.port
    ena.stop()

    first = jobs.heartbeat(T0)
    assert first.startswith("taxon 562: ENA unreachable; checks paused until 2026-11-29T12:01")
    state = ena_state(jobs.settings)
    assert state["state"] == "open" and state["failures"] == 1 and state["paused"]
    assert "ENA did not answer" in state["last_error"]
    paused = jobs.heartbeat(T0 + timedelta(seconds=30))
    assert paused.startswith("nothing due (ENA's portal unreachable since 2026-11-29T12:00:00Z")

    for minute in range(1, 12):  # probes at 1, 3, 7, 11 min: the pause doubles up to 4 min
        jobs.heartbeat(T0 + minute * MINUTE)
    state = circuit_status(jobs.settings, T0 + 11 * MINUTE)["ena"]
    assert state["failures"] == 5 and state["next_try"] == "2026-11-29T12:15:00Z"
    rows = jobs.registry.load()
    assert all(row.needs_attention == "" for row in rows)
    assert all(row.last_checked is None for row in rows)
    assert not waits(jobs.settings)  # an outage is nobody's fault: no taxon backs off

    ena.start(port)
    outcomes = [jobs.heartbeat(T0 + minute * MINUTE) for minute in (15, 16, 17)]
    assert [o.split(":")[0] for o in outcomes] == ["taxon 562", "taxon 1280", "taxon 1639"]
    assert all(row.last_checked is not None and row.needs_attention == ""
               for row in jobs.registry.load())
    assert ena_state(jobs.settings)["state"] == "closed"
    failures = tmp_path / "data" / "ENA_metadata" / "failures.json"
    assert not failures.exists() or json.loads(failures.read_text()) == {}


def test_a_park_an_older_release_made_for_an_outage_is_lifted(tmp_path, ena):
    jobs = lab(tmp_path, ena, 562)
    jobs.registry.update(562, "test", needs_attention="ENA failed 3 times in a row: ENA did "
                         "not answer. Check ENA's status, then `microfetch attention clear 562`")
    ena.stop()

    jobs.heartbeat(T0)

    row = jobs.registry.get(562)
    assert row.needs_attention == "" and row.last_run_status is Status.WARNING


def test_a_refusal_parks_the_taxon_with_enas_reason_kept_intact(tmp_path, ena):
    ena.data.refused.add(999)
    jobs = lab(tmp_path, ena, 999)

    outcome = jobs.heartbeat(T0)

    row = jobs.registry.get(999)
    assert row.last_run_status is Status.ERROR
    assert "HTTP 400: Invalid query" in row.needs_attention
    assert row.needs_attention.endswith("`microfetch attention clear 999`")
    assert outcome == f"taxon 999: parked: {row.needs_attention}"
    assert ena_state(jobs.settings)["state"] == "closed"
    assert jobs.heartbeat(T0 + MINUTE) == "nothing due"


def test_the_pause_holds_for_a_cron_tick_in_another_process(tmp_path, ena):
    jobs = lab(tmp_path, ena, 562)
    port = ena.port
    ena.stop()
    jobs.heartbeat()  # now: the tick below runs on the real clock
    ena.start(port)  # ENA is back, but the pause is not over: the tick must not ask it

    env = cli_env(tmp_path, **ena.settings_env(), MICROFETCH_ENA_RETRIES="0")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from backend.cli.main import main; sys.exit(main())",
         "tick"], env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("heartbeat: nothing due (ENA's portal unreachable since")
    assert searches(ena, 562) == 0
    assert circuit_status(jobs.settings)["ena"]["state"] == State.OPEN.value


def test_no_worker_starts_while_a_worker_reported_the_file_host_down(tmp_path, ena):
    jobs = lab(tmp_path, ena)
    with jobs.registry.transaction("test") as table:
        table[562] = Taxon(562, stage=Stage.DISPATCH, last_checked=T0)
    record_file_host(jobs.settings, transient=4, ok=0, now=T0)

    assert jobs.heartbeat(T0 + timedelta(seconds=30)) == "nothing due"
    assert jobs.heartbeat(T0 + 2 * MINUTE).startswith("taxon 562: started 0 workers")
