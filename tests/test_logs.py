"""Logging: a main log, one log per taxon through one sink, no tracebacks or secrets where
people read them, colours only when wanted."""

from __future__ import annotations

import io
import json
import sys

import pytest
from loguru import logger

from backend import logs
from backend.jobs.alerts import send_alerts
from backend.logs import elide_url, open_taxon_files, scrub, setup_logging, taxon_log
from backend.settings import load_settings
from backend.state.registry import Registry, Taxon
from backend.state.store import open_database


@pytest.fixture(autouse=True)
def default_logging():
    """These tests configure loguru for the process: put it back afterwards."""
    yield
    logger.remove()
    logger.add(sys.stderr)
    if logs._state["router"] is not None:
        logs._state["router"].close()
    logs._state["router"] = None


def sinks() -> int:
    return len(logger._core.handlers)  # loguru keeps no public count of its sinks


def test_taxon_records_go_to_the_main_log_and_the_taxons_own_log(tmp_path):
    setup_logging(tmp_path)
    taxon_log(562).info("started worker mf-562-0-abcdef")
    taxon_log(1280).warning("ENA failed")
    logger.info("a line about no taxon")
    logger.complete()
    main = (tmp_path / "microfetch.log").read_text()
    assert "started worker" in main and "ENA failed" in main and "no taxon" in main
    own = (tmp_path / "562.log").read_text()
    assert "started worker" in own and "ENA failed" not in own and "no taxon" not in own


def test_log_files_are_json_lines_when_asked(tmp_path):
    setup_logging(tmp_path, json=True)
    taxon_log(562).info("collected mf-562-0-abcdef")
    logger.complete()
    record = json.loads((tmp_path / "562.log").read_text().splitlines()[-1])
    assert record["record"]["message"] == "collected mf-562-0-abcdef"
    assert record["record"]["extra"]["taxon_id"] == 562


def test_ten_thousand_taxa_share_one_sink_and_a_bounded_set_of_open_files(tmp_path):
    setup_logging(tmp_path)
    before = sinks()
    for taxon in range(1, 10_001):
        taxon_log(taxon)  # what every stage does first: must add nothing
    assert sinks() == before == 2  # the main log and the taxon router
    assert open_taxon_files() == 0 and not list(tmp_path.glob("[0-9]*.log"))  # lazily opened

    for taxon in range(1, 1_001):
        taxon_log(taxon).info("checked taxon {}", taxon)
    assert open_taxon_files() == logs.OPEN_FILES
    assert len(list(tmp_path.glob("[0-9]*.log"))) == 1_000
    taxon_log(1).info("a second line after its file was closed")
    assert (tmp_path / "1.log").read_text().splitlines()[1].endswith("after its file was closed")


def test_a_taxons_log_rotates_and_keeps_a_bounded_number_of_old_files(tmp_path):
    router = logs.TaxonRouter(tmp_path, open_files=2, rotation_bytes=200, retention=3)
    logger.remove()
    logger.add(router.write, format="{message}", filter=lambda r: "taxon_id" in r["extra"])
    for i in range(40):
        taxon_log(562).info("line {} of a chatty taxon", i)
    router.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["562.log", "562.log.1", "562.log.2",
                                                          "562.log.3"]
    assert "line 39 " in (tmp_path / "562.log").read_text()


def test_a_traceback_goes_to_the_main_log_without_variables_and_never_to_the_taxons(tmp_path):
    setup_logging(tmp_path)
    token = "s3cr3t-token-value"
    try:
        {}["fastq_ftp"]
    except KeyError as exc:
        taxon_log(562).opt(exception=exc).error("unexpected: {}", exc)
    logger.complete()
    main = (tmp_path / "microfetch.log").read_text()
    assert "Traceback" in main and "KeyError: 'fastq_ftp'" in main
    assert token not in main  # loguru's diagnose would print the locals, token included
    own = (tmp_path / "562.log").read_text()
    assert own.strip().endswith("unexpected: 'fastq_ftp'") and "Traceback" not in own


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "coloured"), [("1", False), ("", True)])
def test_no_color_turns_colours_off_even_on_a_terminal(tmp_path, monkeypatch, no_color,
                                                      coloured):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("NO_COLOR", no_color)
    setup_logging(tmp_path, console=True)
    logger.warning("ENA unreachable")
    assert "ENA unreachable" in terminal.getvalue()
    assert ("\x1b[" in terminal.getvalue()) is coloured


def test_settings_repr_shows_whether_secrets_are_set_never_their_text():
    settings = load_settings({"MICROFETCH_ADMIN_TOKEN": "admin-secret-1",
                              "DIGITALOCEAN_TOKEN": "dop_v1_secret2",
                              "MICROFETCH_ALERT_WEBHOOK": "https://hooks.example.com/T0/B0/secret3"})
    text = repr(settings)
    for secret in ("admin-secret-1", "dop_v1_secret2", "secret3"):
        assert secret not in text and secret not in str(settings)
    assert "admin_token='<set>'" in text and "do_token='<set>'" in text
    assert "ena_portal_url='https://www.ebi.ac.uk/ena/portal/api'" in text
    assert "admin_token=''" in repr(load_settings({}))


def test_a_secret_url_is_shown_with_its_path_elided():
    url = "https://hooks.example.com/services/T000/B000/XXXX?key=1"
    assert elide_url(url) == "https://hooks.example.com/…"
    error = ("HTTPSConnectionPool(host='hooks.example.com', port=443): Max retries exceeded "
             "with url: /services/T000/B000/XXXX?key=1 (Caused by ...); 404 Client Error: "
             f"Not Found for url: {url}")
    assert "XXXX" not in scrub(error, url) and "url: /… (Caused by" in scrub(error, url)


def test_a_failing_webhook_is_logged_in_one_line_without_its_secret_path(tmp_path):
    setup_logging(tmp_path)
    registry = Registry(tmp_path / "microfetch.csv", open_database(tmp_path / "db.sqlite"),
                        tmp_path / "history.jsonl")
    registry.ensure_ready()
    with registry.transaction() as table:
        table[562] = Taxon(562, needs_attention="disk full")
    webhook = "http://127.0.0.1:9/services/T000/B000/XXXXSECRET"

    assert send_alerts(registry, tmp_path / "alerts.json", webhook) == []

    logger.complete()
    lines = [line for line in (tmp_path / "microfetch.log").read_text().splitlines()
             if "alert webhook" in line]
    assert len(lines) == 1 and "http://127.0.0.1:9/…" in lines[0]
    assert "XXXXSECRET" not in (tmp_path / "microfetch.log").read_text()


def test_a_job_failing_for_an_expected_cause_logs_one_line_and_a_surprise_its_traceback(
        tmp_path):
    from backend.errors import OperationError
    from backend.jobs.daemon import guarded
    from backend.state.metrics import DaemonStatus

    setup_logging(tmp_path)

    def unreachable() -> str:
        raise OperationError("rsync of worker mf-562-0-abcdef timed out")

    def buggy() -> str:
        raise KeyError("phase")

    guarded("collector", unreachable, DaemonStatus(), every=60)()
    guarded("reconciler", buggy, DaemonStatus(), every=300)()

    logger.complete()
    main = (tmp_path / "microfetch.log").read_text()
    expected = [line for line in main.splitlines() if "job collector" in line]
    assert len(expected) == 1 and expected[0].endswith(
        "job collector failed (rsync of worker mf-562-0-abcdef timed out); next run in 60 s")
    assert main.count("Traceback") == 1 and "job reconciler failed unexpectedly" in main
