"""A lab's `microfetch serve` riding out an ENA outage: nothing parked, everything fetched after."""

from __future__ import annotations

import signal

from backend.demo.ena_standin import make_run
from backend.settings import load_settings
from backend.state.circuit import circuit_status


def test_an_ena_outage_parks_no_taxon_shows_while_it_lasts_and_all_complete_after(daemon):
    for i in range(1, 3):
        make_run(daemon.ena.data, 1639, f"ERR{16390000 + i}", reads=400)
    daemon.env.update(MICROFETCH_OUTAGE_BACKOFF_SECONDS="1",
                      MICROFETCH_OUTAGE_BACKOFF_MAX_SECONDS="3")
    settings = load_settings(daemon.env)
    assert daemon.cli("--offline", "562", "1280", "1639", add_taxa=True).returncode == 0
    port = daemon.ena.port
    daemon.ena.stop()
    daemon.start()

    seen: list[dict] = []

    def outage_shown_for_a_while() -> bool:
        rows = daemon.rows()
        assert not any(row["needs_attention"] for row in rows.values()), rows
        seen.append(circuit_status(settings)["ena"])
        return seen[-1]["failures"] >= 4

    daemon.wait_until(outage_shown_for_a_while, 90)
    assert seen[-1]["state"] in ("open", "half-open")
    assert "ENA did not answer" in seen[-1]["last_error"]
    assert seen[-1]["summary"].startswith("ENA's portal unreachable since ")

    daemon.ena.start(port)
    daemon.wait_until(lambda: daemon.all_complete(562, 1280, 1639), 180)

    rows = daemon.rows()
    assert all(row["needs_attention"] == "" for row in rows.values())
    assert daemon.genomes() == daemon.expected(562, 1280, 1639)
    assert circuit_status(settings)["ena"]["state"] == "closed"
    main_log = (daemon.tmp / "data" / "logs" / "microfetch.log").read_text()
    assert "ENA unreachable (" in main_log and "ENA answers again" in main_log
    assert "Traceback" not in main_log  # an outage is expected: one line each, no traceback
    for taxon in (562, 1280, 1639):
        assert "Traceback" not in (daemon.tmp / "data" / "logs" / f"{taxon}.log").read_text()
    assert daemon.signal(signal.SIGTERM) == 0
