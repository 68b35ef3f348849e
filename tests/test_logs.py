"""Logging: a main log, one log per taxon, JSON lines when asked."""

from __future__ import annotations

import json
import sys

import pytest
from loguru import logger

from backend import logs
from backend.logs import setup_logging, taxon_log


@pytest.fixture(autouse=True)
def default_logging():
    """These tests configure loguru for the process: put it back afterwards."""
    yield
    logger.remove()
    logger.add(sys.stderr)
    logs._state.update(log_dir=None, taxa=set())


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
