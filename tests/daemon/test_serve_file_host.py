"""A file host answering 503 for a while costs nothing: workers back off, nothing is parked,
no attempt is counted, and every taxon completes."""

from __future__ import annotations

import signal

from backend.settings import load_settings
from backend.state.accessions import AccessionList


def test_a_file_host_answering_503_for_a_while_costs_no_attempt_and_parks_nothing(daemon):
    daemon.ena.fail("files", *["503"] * 12)  # the first dozen file requests fail
    assert daemon.cli("--offline", "562", "1280", add_taxa=True).returncode == 0

    daemon.start()
    daemon.wait_until(lambda: daemon.all_complete(562, 1280), 180)
    assert daemon.signal(signal.SIGTERM) == 0

    assert daemon.ena.next_fault("files") == ""  # every 503 was served
    file_requests = [r for r in daemon.ena.requests if r["path"].startswith("/vol1/")]
    assert len(file_requests) > 12  # the workers came back after the 503s
    rows = daemon.rows()
    assert all(row["needs_attention"] == "" for row in rows.values())
    settings = load_settings(daemon.env)
    for taxon in (562, 1280):
        runs = AccessionList.of(settings, taxon).load().values()
        assert all(run.attempts == 0 for run in runs)  # the host's fault, not the runs'
    assert daemon.genomes() == daemon.expected(562, 1280)
