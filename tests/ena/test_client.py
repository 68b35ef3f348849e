"""The ENA client against `responses`: retries, Retry-After, bad answers."""

from __future__ import annotations

import pytest
import responses

from backend import __version__
from backend.ena.client import FIELDS, EnaClient, EnaError, RateLimit
from backend.settings import load_settings

PORTAL = "https://www.ebi.ac.uk/ena/portal/api"
HEADER = "\t".join(FIELDS)


def client(sleeps: list[float], retries: int = 3) -> EnaClient:
    settings = load_settings({"MICROFETCH_ENA_RETRIES": str(retries)})
    return EnaClient(settings, sleep=sleeps.append)


def row(accession: str) -> str:
    values = {f: "" for f in FIELDS} | {"run_accession": accession}
    return "\t".join(values[f] for f in FIELDS)


@responses.activate
def test_a_429_is_retried_after_the_time_ena_asks_for(tmp_path):
    responses.post(f"{PORTAL}/search", status=429, headers={"Retry-After": "7"})
    responses.post(f"{PORTAL}/search", body=f"{HEADER}\n{row('ERR1')}\n")
    sleeps: list[float] = []
    rows = client(sleeps).search_to_file("tax_tree(562)", FIELDS, tmp_path / "a.tsv")
    assert rows == 1
    assert 7.0 in sleeps
    sent = responses.calls[1].request
    assert "query=tax_tree%28562%29" in sent.body and "limit=0" in sent.body
    assert sent.headers["User-Agent"].startswith(f"microfetch/{__version__}")


@responses.activate
def test_server_errors_are_retried_with_a_bound_then_reported(tmp_path):
    responses.get(f"{PORTAL}/count", status=503)
    sleeps: list[float] = []
    with pytest.raises(EnaError, match=r"after 3 tries \(HTTP 503\)"):
        client(sleeps, retries=2).count("tax_tree(562)")
    assert len(responses.calls) == 3
    assert [s for s in sleeps if s >= 1] == [1.0, 2.0]  # the others are the rate limit


@responses.activate
def test_a_204_means_no_runs(tmp_path):
    responses.post(f"{PORTAL}/search", status=204)
    assert client([]).search_to_file("tax_tree(562)", FIELDS, tmp_path / "a.tsv") == 0


@responses.activate
def test_an_html_page_is_an_error_not_data(tmp_path):
    responses.post(f"{PORTAL}/search", body="<html><body>maintenance</body></html>")
    with pytest.raises(EnaError, match="HTML page"):
        client([]).search_to_file("tax_tree(562)", FIELDS, tmp_path / "a.tsv")


@responses.activate
def test_a_header_without_a_requested_field_is_an_error(tmp_path):
    responses.post(f"{PORTAL}/search", body="run_accession\ttax_id\nERR1\t562\n")
    with pytest.raises(EnaError, match="lacks the requested field"):
        client([]).search_to_file("tax_tree(562)", FIELDS, tmp_path / "a.tsv")


@responses.activate
def test_a_400_quotes_enas_reason_and_is_not_retried(tmp_path):
    responses.post(f"{PORTAL}/search", status=400, body="Invalid field: fastq_foo")
    with pytest.raises(EnaError, match="Invalid field: fastq_foo") as caught:
        client([]).search_to_file("tax_tree(562)", FIELDS, tmp_path / "a.tsv")
    assert caught.value.permanent
    assert len(responses.calls) == 1


@responses.activate
def test_a_count_that_is_not_a_number_is_an_error():
    responses.get(f"{PORTAL}/count", body="<html>oops</html>")
    with pytest.raises(EnaError, match="not `count` and a number"):
        client([]).count("tax_tree(562)")


def test_the_rate_limit_spaces_requests():
    now = [0.0]
    sleeps: list[float] = []
    limit = RateLimit(10, clock=lambda: now[0], sleep=sleeps.append)
    for _ in range(3):
        limit.wait()
    assert sleeps == pytest.approx([0.1, 0.2])
