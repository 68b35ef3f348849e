"""Jobs called directly: alerts once per reason, a failing taxon parked, `microfetch tick`."""

from __future__ import annotations

import http.server
import json
import threading

from backend.jobs.alerts import send_alerts
from backend.jobs.heartbeat import Jobs
from backend.settings import load_settings
from backend.state.registry import Registry, Status, Taxon
from backend.state.store import open_database


def webhook():
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def registry_at(tmp_path) -> Registry:
    registry = Registry(tmp_path / "microfetch.csv", open_database(tmp_path / "db.sqlite"),
                        tmp_path / "history.jsonl")
    registry.ensure_ready()
    with registry.transaction() as table:
        table[562] = Taxon(562, "Escherichia coli")
    return registry


def test_a_webhook_is_told_once_per_reason(tmp_path):
    server, received = webhook()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    registry = registry_at(tmp_path)
    state = tmp_path / "alerts.json"
    try:
        registry.update(562, needs_attention="disk full")
        assert send_alerts(registry, state, url) == [562]
        assert send_alerts(registry, state, url) == []
        registry.update(562, needs_attention="ENA failed 3 times in a row")
        assert send_alerts(registry, state, url) == [562]
    finally:
        server.shutdown()
    assert [r["text"] for r in received] == [
        "microfetch: taxon 562 (Escherichia coli) needs attention: disk full",
        "microfetch: taxon 562 (Escherichia coli) needs attention: ENA failed 3 times in a row",
    ]


def test_an_unreachable_webhook_is_tried_again_later(tmp_path):
    registry = registry_at(tmp_path)
    registry.update(562, needs_attention="disk full")
    state = tmp_path / "alerts.json"
    assert send_alerts(registry, state, "http://127.0.0.1:9/hook") == []
    assert json.loads(state.read_text()) == {}


def test_an_unexpected_error_parks_the_taxon_and_the_heartbeat_goes_on(tmp_path, monkeypatch):
    settings = load_settings({"MICROFETCH_CSV": str(tmp_path / "microfetch.csv"),
                              "MICROFETCH_DATA_DIR": str(tmp_path / "data")})
    registry_at(tmp_path).path.replace(settings.csv_path)
    jobs = Jobs.build(settings)

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("fastq_ftp")

    monkeypatch.setattr("backend.ena.fetch_accession_links.check_taxon", broken)
    outcome = jobs.heartbeat()
    assert outcome.startswith("taxon 562: parked: unexpected error in the heartbeat: KeyError")
    row = jobs.registry.get(562)
    assert row.last_run_status is Status.ERROR
    assert row.needs_attention.startswith("unexpected error in the heartbeat: KeyError: "
                                          "'fastq_ftp'; see the main log")
    assert jobs.heartbeat() == "nothing due"


def test_tick_runs_each_job_once_in_the_foreground(run_cli, tmp_path):
    assert run_cli("--offline", "562", add_taxa=True).returncode == 0
    from tests.conftest import cli_env

    env = cli_env(tmp_path, MICROFETCH_ENA_PORTAL_URL="http://127.0.0.1:9/api",
                  MICROFETCH_ENA_RETRIES="0")
    result = run_cli("tick", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("heartbeat: taxon 562: ENA unreachable; checks paused until ")
    assert lines[1].startswith("collector: collected 0 workers")
    assert lines[2].startswith("reconciler: 0 orphans destroyed")


def test_serve_refuses_digitalocean_without_what_droplets_need(run_cli, tmp_path):
    from tests.conftest import cli_env

    result = run_cli("serve", env=cli_env(tmp_path, MICROFETCH_BACKEND="digitalocean"))
    assert result.returncode == 2
    for needed in ("set DIGITALOCEAN_TOKEN", "set MICROFETCH_DO_SSH_KEYS",
                   "MICROFETCH_CALLBACK_URL=http://127.0.0.1:8000"):
        assert needed in result.stderr
