"""The whole loop through `microfetch serve`: ENA stand-in, local workers, real callbacks."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from backend.demo.ena_standin import make_run
from backend.state.store import open_database
from backend.state.workers import Phase, WorkerRecord, WorkerStore

from .conftest import runner_processes


def worker_records(folder: Path) -> list[WorkerRecord]:
    """The daemon's worker records, read from its database as another process would."""
    return WorkerStore(open_database(folder / "data" / "microfetch.sqlite")).all()


def health(daemon) -> tuple[int, dict]:
    url = f"http://{daemon.env['MICROFETCH_BIND']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_two_taxa_reach_complete_and_a_later_round_fetches_only_new_runs(daemon):
    result = daemon.cli("562", "1280", add_taxa=True)
    assert result.returncode == 0, result.stderr
    assert "added 562 (Escherichia coli)" in result.stdout
    daemon.env["MICROFETCH_RECHECK_HOURS"] = "0.003"  # about 11 s
    daemon.start()

    daemon.wait_until(lambda: daemon.all_complete(562, 1280))

    assert daemon.genomes() == daemon.expected(562, 1280)
    assert not any("SRR12809999" in path for path in daemon.genomes())
    assert not any((daemon.tmp / "data" / "local_workers").iterdir())
    assert runner_processes(daemon.tmp) == []
    status, body = health(daemon)
    assert status == 200 and body["scheduler_running"], body
    assert "started worker" in (daemon.tmp / "data" / "logs" / "562.log").read_text()

    new = make_run(daemon.ena.data, 562, "ERR5629999", updated="2099-01-01", reads=400)
    daemon.wait_until(lambda: any(new["run_accession"] in p for p in daemon.genomes()), 90)
    daemon.wait_until(lambda: daemon.all_complete(562, 1280))

    assert daemon.genomes() == daemon.expected(562, 1280)
    assert all(count == 1 for count in daemon.file_downloads().values())
    incremental = [r["params"]["query"] for r in daemon.ena.requests
                   if r["path"].endswith("/search") and "last_updated" in r["params"]["query"]]
    assert incremental and incremental[0].startswith("tax_tree(562) AND last_updated>=")
    assert daemon.signal(signal.SIGTERM) == 0


def test_sigkill_at_several_moments_then_restart_reaches_the_same_end(daemon):
    assert daemon.cli("--offline", "562", "1280", add_taxa=True).returncode == 0
    for delay in (1.5, 2.5, 3.5):
        daemon.start()
        time.sleep(delay)
        assert daemon.signal(signal.SIGKILL) == -signal.SIGKILL
    daemon.start()

    daemon.wait_until(lambda: daemon.all_complete(562, 1280))

    assert daemon.genomes() == daemon.expected(562, 1280)
    assert all(count == 1 for count in daemon.file_downloads().values())
    records = worker_records(daemon.tmp)
    assert records and all(r.phase is Phase.DESTROYED for r in records)
    assert not any((daemon.tmp / "data" / "local_workers").iterdir())
    daemon.signal(signal.SIGTERM)
    assert runner_processes(daemon.tmp) == []


def test_sigterm_exits_zero_within_the_grace_period_and_the_next_start_finishes(daemon):
    assert daemon.cli("--offline", "562", "1280", add_taxa=True).returncode == 0
    daemon.start()
    daemon.wait_until(lambda: (daemon.tmp / "data" / "microfetch.sqlite").exists()
                      and bool(worker_records(daemon.tmp)), 60)
    started = time.monotonic()
    assert daemon.signal(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10 + 5
    assert "stopped" in daemon.log()

    daemon.start()
    daemon.wait_until(lambda: daemon.all_complete(562, 1280))
    assert daemon.genomes() == daemon.expected(562, 1280)
    assert daemon.signal(signal.SIGINT) == 0
