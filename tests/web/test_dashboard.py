"""The operator's dashboard: overview numbers, the runs table, history, log, exports, charts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from backend.settings import load_settings
from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.exports import export_taxon
from backend.state.registry import Status
from backend.state.store import database_of
from backend.timeutil import format_time, utc_now
from web import create_app
from web.runs_table import EXCLUSION_WORDS, Query, runs_page

from .conftest import ADMIN

BEARER = {"Authorization": f"Bearer {ADMIN}"}


def add_runs(site, taxon: int, count: int, **fields) -> None:
    with AccessionList.of(site.settings, taxon).edit() as runs:
        for i in range(count):
            accession = f"SRR{taxon:04d}{i:05d}"
            runs[accession] = Run(accession, fastq_bytes=(1000 + i,), **fields)


def collected(site, taxon: int, minutes_ago: int, runs: int, size: int) -> None:
    """A collection in the past (the clock is never patched: the data is put in the past)."""
    at = format_time(utc_now() - timedelta(minutes=minutes_ago))
    with database_of(site.settings).write() as con:
        con.execute("INSERT INTO fetch_events (taxon, at, runs, bytes) VALUES (?, ?, ?, ?)",
                    (taxon, at, runs, size))


def test_the_overview_totals_and_eta_follow_the_runs_and_the_last_hour_of_collections(site):
    add_runs(site, 562, 4, status=RunStatus.FETCHED)
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR9"] = Run("ERR9", fastq_bytes=(3000,))
        runs["ERR8"] = Run("ERR8", fastq_bytes=(7,))
        runs["ERR8"].exclude(Exclusion.WITHDRAWN, "suppressed at ENA")
    collected(site, 562, 30, runs=4, size=3000)
    collected(site, 562, 200, runs=50, size=99_999)  # older than an hour: not in the pace
    o = site.client.get("/api/overview").get_json()
    assert (o["totals"]["fetched"], o["totals"]["pending"], o["totals"]["withdrawn"]) == (4, 1, 1)
    assert o["totals"]["bytes_home"] == 4 * 1000 + 6 and o["totals"]["bytes_to_go"] == 3000
    assert o["throughput"] == {"window_seconds": 3600, "runs": 4, "bytes": 3000,
                               "bytes_per_second": round(3000 / 3600, 1)}
    assert o["eta_seconds"] == 3600  # 3000 bytes to go at 3000 bytes an hour
    (row,) = o["taxa_eta"]
    assert (row["taxonomy_id"], row["eta_seconds"], row["runs_to_go"]) == (562, 3600, 1)


def test_with_nothing_fetched_in_the_last_hour_the_eta_is_unknown_not_zero(site):
    add_runs(site, 562, 2)
    o = site.client.get("/api/overview").get_json()
    assert o["eta_seconds"] is None and o["taxa_eta"][0]["eta_seconds"] is None
    page = site.client.get("/").get_data(as_text=True)
    assert "no progress in the last hour" in page
    assert "unknown: nothing fetched in the last hour" in page
    with AccessionList.of(site.settings, 562).edit() as runs:
        for run in runs.values():
            run.status = RunStatus.FETCHED
    assert site.client.get("/api/overview").get_json()["eta_seconds"] == 0
    assert ">nothing left</dd>" in site.client.get("/").get_data(as_text=True)


def test_a_live_worker_shows_its_progress_age_and_cost_from_the_last_estimate(site):
    site.registry.note(562, "cost_estimate", {"droplets": 1, "hours": 2.0,
                                              "droplet_cost": 0.06, "total": 0.06,
                                              "text": "1 droplets"}, "dispatcher")
    (worker,) = site.client.get("/api/overview").get_json()["workers"]
    assert worker["name"] == "mf-562-0-abcdef"
    assert (worker["runs"], worker["runs_done"], worker["bytes"]) == (1, 0, 100)
    assert worker["cost_so_far"] == 0.03  # one started hour at $0.03 an hour
    assert 0 <= worker["age_seconds"] < 3600


def test_today_s_spend_counts_today_s_estimates_and_reaching_the_cap_needs_attention(tmp_path):
    settings = load_settings({"MICROFETCH_CSV": str(tmp_path / "m.csv"),
                              "MICROFETCH_DATA_DIR": str(tmp_path / "data"),
                              "MICROFETCH_DO_DAILY_SPEND_CAP": "1.5"})
    from backend.state.registry import Registry, Taxon

    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("test") as table:
        table[562] = Taxon(562, "Escherichia coli")
    for total in (0.5, 1.25):
        registry.note(562, "cost_estimate", {"total": total, "text": "x"}, "dispatcher")
    with database_of(settings).write() as con:  # one from yesterday does not count
        con.execute("INSERT INTO history (time, taxon, field, old, new, actor) VALUES "
                    "(?, 562, 'cost_estimate', NULL, '{\"total\": 9}', 'dispatcher')",
                    (format_time(utc_now() - timedelta(days=1, hours=1)),))
    client = create_app(settings).test_client()
    o = client.get("/api/overview").get_json()
    assert o["spend"] == {"today": 1.75, "cap": 1.5, "estimates": 2, "percent": 116.7}
    assert "reached the cap $1.50" in o["attention"][0]["reason"]
    assert "MICROFETCH_DO_DAILY_SPEND_CAP" in o["attention"][0]["command"]


def test_what_needs_attention_comes_most_urgent_first_with_what_clears_it(site):
    add_runs(site, 562, 3)
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["SRR056200000"].exclude(Exclusion.FAILED_ATTEMPTS, "3 attempts")
    site.registry.update(562, last_run_status=Status.WARNING)
    assert [a["command"] for a in site.client.get("/api/overview").get_json()["attention"]] \
        == ["microfetch retry 562", "microfetch fetch 562"]
    site.registry.update(562, needs_attention="disk full at home")
    first = site.client.get("/api/overview").get_json()["attention"][0]
    assert first == {"taxonomy_id": 562, "command": "microfetch attention clear 562",
                     "action": "clear",
                     "reason": "562 Escherichia coli is parked, the daemon leaves it alone: "
                               "disk full at home"}


def test_the_ena_health_section_lists_taxa_whose_last_check_failed(site):
    site.registry.update(562, last_run_status=Status.ERROR, last_checked=utc_now())
    ena = site.client.get("/api/overview").get_json()["ena"]
    assert ena["services"]["ena"]["state"] == "closed" and ena["problem_count"] == 1
    assert ena["problems"][0]["taxonomy_id"] == 562
    page = site.client.get("/").get_data(as_text=True)
    assert '<tr data-service="ena">' in page and "ENA&#39;s portal is reachable" in page


def test_an_ena_outage_is_shown_first_as_waited_out_without_server_paths(site):
    from backend.state.circuit import ena_failed

    ena_failed(site.settings, f"503 from ENA; see {site.settings.data_dir}/x.log",
               utc_now() - timedelta(minutes=4))
    o = site.client.get("/api/overview").get_json()
    ena = o["ena"]["services"]["ena"]
    assert ena["state"] == "open"
    assert ena["last_error"] == "503 from ENA; see $MICROFETCH_DATA_DIR/x.log"
    first = o["attention"][0]
    assert first["reason"].startswith("ENA's portal unreachable since")
    assert "tried again by itself" in first["command"]
    page = site.client.get("/").get_data(as_text=True)
    assert str(site.settings.data_dir) not in page and ">4 min ago</time>" in page


def page_through(site, taxon: int, **params) -> list[dict]:
    seen, after = [], ""
    for _ in range(100):  # bounded: far more pages than any test has
        answer = site.client.get(f"/api/taxa/{taxon}/runs",
                                 query_string=params | ({"after": after} if after else {}))
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        seen += body["runs"]
        after = body["next"]
        if not after:
            return seen
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize(("sort", "order", "key"), [
    ("size", "desc", lambda r: -r["bytes"]), ("accession", "asc", lambda r: r["accession"]),
    ("attempts", "desc", lambda r: -r["attempts"]), ("status", "asc", lambda r: r["status"]),
])
def test_paging_by_cursor_visits_every_run_once_in_the_chosen_order(site, sort, order, key):
    add_runs(site, 562, 130)
    with AccessionList.of(site.settings, 562).edit() as runs:
        for i, run in enumerate(runs.values()):
            run.attempts = i % 4
            if i % 3 == 0:
                run.status = RunStatus.FETCHED
    seen = page_through(site, 562, sort=sort, order=order, limit=25)
    assert len(seen) == 130 and len({r["accession"] for r in seen}) == 130
    assert [key(r) for r in seen] == sorted(key(r) for r in seen)


def test_searching_by_accession_prefix_finds_those_runs_in_any_case(site):
    add_runs(site, 562, 130)
    found = page_through(site, 562, q="srr05620012", limit=25)
    assert [r["accession"] for r in found] == [f"SRR05620012{i}" for i in range(10)]
    assert found[0]["ena_url"] == "https://www.ebi.ac.uk/ena/browser/view/SRR056200120"
    page = site.client.get("/taxa/562/runs?q=SRR056200127").get_data(as_text=True)
    assert 'href="https://www.ebi.ac.uk/ena/browser/view/SRR056200127"' in page
    assert page.count("<tr data-accession=") == 1


@pytest.mark.parametrize("query", ["sort=bytes", "order=up", "limit=7", "limit=x",
                                   "q=SRR%25", "q=" + "A" * 41, "after=nonsense",
                                   "after=-5", "after=1.5"])
def test_a_sort_search_or_cursor_the_table_cannot_take_is_refused_with_the_reason(site, query):
    answer = site.client.get(f"/api/taxa/562/runs?{query}")
    assert answer.status_code == 400 and answer.get_json()["problems"]
    assert site.client.get(f"/taxa/562/runs?{query}").status_code == 400


def test_a_cursor_naming_a_run_no_longer_in_the_taxon_is_404_and_says_to_start_again(site):
    add_runs(site, 562, 3)
    answer = site.client.get("/api/taxa/562/runs?sort=size&after=999999")
    assert answer.status_code == 404 and "first page" in answer.get_json()["error"]


@pytest.mark.parametrize("sort", ["accession", "status", "size", "attempts", "fetched", "order"])
def test_a_deep_page_is_an_index_range_not_an_offset_or_a_sort(site, sort):
    add_runs(site, 562, 10)
    db = database_of(site.settings)
    runs_page(db, 562, Query(sort=sort))  # creates the indexes
    captured: list[str] = []
    db.connection().set_trace_callback(captured.append)
    runs_page(db, 562, Query(sort=sort, descending=True, after=5))
    db.connection().set_trace_callback(None)
    pages = [s for s in captured if s.startswith("SELECT") and "LIMIT" in s]
    assert pages
    for sql in pages:
        plan = " ".join(str(tuple(row)) for row in db.query("EXPLAIN QUERY PLAN " + sql))
        assert "OFFSET" not in sql
        assert "TEMP B-TREE" not in plan and "USING" in plan, plan
        if sort != "order":  # each range bounds the sort key itself, not only the taxon
            assert re.search(r"\(taxon=\? AND \w+[<>=]\?", plan), plan
    if sort not in ("order", "accession"):  # (accession is unique: one run per value)
        # Runs sharing the cursor's value are a range of seq, never a scan of them all.
        plans = [str([tuple(r) for r in db.query("EXPLAIN QUERY PLAN " + sql)]) for sql in pages]
        assert any(re.search(r"\w+=\? AND seq<\?", plan) for plan in plans), plans


def test_every_exclusion_code_is_explained_in_words_on_the_page(site):
    assert set(EXCLUSION_WORDS) == {code.value for code in Exclusion}
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1"] = Run("ERR1")
        runs["ERR1"].exclude(Exclusion.NO_MD5, "ERR1_1.fastq.gz")
    page = site.client.get("/taxa/562/runs").get_data(as_text=True)
    assert "Left out: ENA gives no MD5 checksum, so a download could not be verified " \
           "(ERR1_1.fastq.gz)" in page


def test_the_history_shows_admin_actions_and_the_interface_that_made_them(site):
    site.client.post("/api/taxa/562/priority", json={"priority": 7}, headers=BEARER)
    site.registry.update(562, "alice", needs_attention="look at the disk")
    page = site.client.get("/taxa/562").get_data(as_text=True)
    assert "priority: 0 → 7" in page and "JSON API" in page
    assert "parked: look at the disk" in page
    assert "command line or script (user alice)" in page


def test_the_log_tail_shows_what_failed_but_never_a_traceback(site):
    log = site.settings.log_dir / "562.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-23 10:00:00 | ERROR | ENA did not answer: 503\n"
                   "Traceback (most recent call last):\n"
                   '  File "/srv/microfetch/ena.py", line 40, in get\n'
                   "    raise EnaError(taxon=562)\n"
                   "backend.errors.EnaError: 503 Service Unavailable\n"
                   "2026-11-23 10:05:00 | INFO | ENA answered again\n")
    page = site.client.get("/taxa/562").get_data(as_text=True)
    assert "ENA did not answer: 503" in page and "ENA answered again" in page
    assert "Traceback" not in page and 'File "' not in page
    assert "a traceback was left out here" in page


def test_the_samplesheet_and_accession_list_are_served_without_server_paths(site):
    assert site.client.get("/taxa/562/samplesheet.csv").status_code == 404  # not written yet
    add_runs(site, 562, 2, status=RunStatus.FETCHED)
    with AccessionList.of(site.settings, 562).edit() as runs:
        for run in runs.values():
            run.fastq_files = (f"{run.accession}_1.fastq.gz",)
    export_taxon(site.settings, 562)
    sheet = site.client.get("/taxa/562/samplesheet.csv")
    assert sheet.status_code == 200 and sheet.mimetype == "text/csv"
    text = sheet.get_data(as_text=True)
    assert text.startswith("sample,fastq_1,fastq_2\nSRR056200000,$MICROFETCH_DATA_DIR/genomes")
    assert str(site.settings.data_dir) not in text
    listing = site.client.get("/taxa/562/accessions.csv").get_data(as_text=True)
    assert listing.count("\n") == 3 and "SRR056200001" in listing
    page = site.client.get("/taxa/562").get_data(as_text=True)
    assert 'href="/taxa/562/samplesheet.csv"' in page and 'href="/taxa/562/accessions.csv"' in page


def test_the_charts_data_is_cumulative_per_taxon_and_overall(site):
    with site.registry.transaction("test") as table:
        from backend.state.registry import Taxon

        table[1280] = Taxon(1280, "Staphylococcus aureus")
    add_runs(site, 562, 3, status=RunStatus.FETCHED)
    add_runs(site, 1280, 2, status=RunStatus.FETCHED)
    collected(site, 562, 120, runs=2, size=2000)
    collected(site, 1280, 60, runs=2, size=500)
    collected(site, 562, 1, runs=1, size=1000)
    data = site.client.get("/api/fetched").get_json()
    lines = {s["label"]: s for s in data["series"]}
    assert set(lines) == {"all taxa", "562 Escherichia coli", "1280 Staphylococcus aureus"}
    assert lines["all taxa"]["runs"][-1] == 5 and lines["all taxa"]["bytes"][-1] == 3500
    assert lines["562 Escherichia coli"]["runs"][-1] == 3
    for line in lines.values():
        assert len(line["runs"]) == len(data["t"]) and line["runs"] == sorted(line["runs"])
    assert data["t"] == sorted(set(data["t"]))  # distinct times, oldest first
    one = site.client.get("/api/taxa/1280/fetched").get_json()
    assert [s["label"] for s in one["series"]] == ["1280 Staphylococcus aureus"]
    assert site.client.get("/api/taxa/4242/fetched").status_code == 404


def test_times_read_relative_with_the_exact_time_on_hover(site):
    site.registry.update(562, last_checked=utc_now() - timedelta(minutes=3, seconds=5))
    page = site.client.get("/taxa/562").get_data(as_text=True)
    exact = (utc_now() - timedelta(minutes=3, seconds=5)).strftime("%Y-%m-%d %H:%M")
    assert f'title="{exact}' in page and ">3 min ago</time>" in page


def test_with_many_taxa_the_overview_lists_the_most_urgent_and_links_to_all(site):
    from backend.state.registry import Taxon

    with site.registry.transaction("test") as table:
        for taxon in range(1000, 1150):
            table[taxon] = Taxon(taxon, f"Species {taxon}")
        table[1149].needs_attention = "disk full"
    page = site.client.get("/").get_data(as_text=True)
    rows = page.count("<tr data-taxon=")
    assert rows == 100 and "The 100 most urgent of 151 taxa." in page
    assert page.index('data-taxon="1149"') < page.index('data-taxon="562"')  # parked first
    assert site.client.get("/?taxa=all").get_data(as_text=True).count("<tr data-taxon=") == 151
    assert site.client.get("/?taxa=some").status_code == 400


def test_a_search_matching_more_runs_than_a_page_may_sort_is_shown_by_accession_and_says_so(
        site, monkeypatch):
    monkeypatch.setattr("web.runs_table.SORTED_MATCHES", 20)
    add_runs(site, 562, 60)
    broad = site.client.get("/api/taxa/562/runs?q=SRR0562&sort=size&order=desc").get_json()
    assert broad["sort"] == "accession" and "More than 20 runs start with SRR0562" in broad["note"]
    accessions = [r["accession"] for r in broad["runs"]]
    assert accessions == sorted(accessions, reverse=True)  # still in the order asked
    narrow = site.client.get("/api/taxa/562/runs?q=SRR05620000&sort=size&order=desc").get_json()
    assert narrow["sort"] == "size" and narrow["note"] == ""
    assert [r["bytes"] for r in narrow["runs"]] == sorted((r["bytes"] for r in narrow["runs"]),
                                                          reverse=True)
    page = site.client.get("/taxa/562/runs?q=SRR0562&sort=size").get_data(as_text=True)
    assert "they are shown by accession" in page
