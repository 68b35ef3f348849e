"""The pages in headless Chromium (Debian's chromium, driven by playwright)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from backend.state.accessions import AccessionList, Exclusion, Run, RunStatus
from backend.state.names import look_up_names
from backend.timeutil import utc_now
from tests.conftest import cli_env
from tests.loopback import free_port

from .conftest import ADMIN, serving

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


@pytest.fixture
def served(site) -> Iterator[str]:
    site.app.config["MICROFETCH_LOOKUP"] = lambda taxon: {1280: "Staphylococcus aureus"}[taxon]
    with serving(site.app) as url:
        yield url


def test_an_admin_adds_a_taxon_through_the_form_and_sees_it_in_the_table(browser, served,
                                                                         site):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(served + "/")
    assert page.locator("#add-ids").count() == 0  # no form before signing in
    page.fill("#admin-token", ADMIN)
    page.click("#sign-in")
    page.fill("#add-ids", "1280")
    page.click("#add-submit")
    page.wait_for_selector('tr[data-taxon="1280"]')
    assert "added 1280; name looked up in the background" in page.content()
    # the daemon's heartbeat looks the name up; the table shows it at its next refresh
    look_up_names(site.settings, site.registry, site.app.config["MICROFETCH_LOOKUP"],
                  utc_now())
    page.reload()
    assert "Staphylococcus aureus" in page.inner_text("#taxa")
    page.close()


def test_without_the_admin_token_the_add_action_is_refused(browser, served, site):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(served + "/")
    page.fill("#admin-token", "not-the-token")
    page.click("#sign-in")
    assert "that is not the admin token" in page.content()
    status = page.evaluate("""async () => {
        const body = new URLSearchParams({ids: "1280", csrf: "guess"});
        const r = await fetch("/taxa", {method: "POST", body});
        return r.status; }""")
    assert status == 403
    assert 1280 not in {row.taxonomy_id for row in site.registry.load()}
    page.close()


AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"


def violations(page: Page) -> list[str]:
    """axe-core's violations on the page, one line each: rule, impact and where."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ` +
            v.nodes.map(n => n.target.join(" ")).join(", "));
    }""")
    return list(found)


def test_axe_finds_no_violation_on_the_dashboard_and_a_taxon_page_signed_in_or_out(
        browser, served, site):
    # axe is injected as a script of its own, which the pages' CSP rightly refuses.
    page = browser.new_page(bypass_csp=True)
    page.set_default_timeout(15_000)
    found = {}
    for signed_in in (False, True):
        if signed_in:  # now with fetched runs (a plotted line) and a long log line
            with_runs_and_log(site)
            page.fill("#admin-token", ADMIN)
            page.click("#sign-in")
            page.wait_for_selector("#sign-out")
        for path in ("/", "/taxa/562"):
            page.goto(served + path)
            found[(path, signed_in)] = violations(page)
    page.close()
    assert found == {key: [] for key in found}


def with_runs_and_log(site) -> None:
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1000001"] = Run("ERR1000001", status=RunStatus.FETCHED, fastq_bytes=(10, 20),
                                 fetched_at=utc_now())
        runs["ERR1000002"] = Run("ERR1000002", fastq_bytes=(5,))
    log = site.settings.log_dir / "562.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("2026-11-23 started worker mf-562-0-abcdef " + "x" * 400 + "\n")


def test_the_pages_scripts_run_under_the_csp_and_nothing_is_refused(browser, served, site):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    from backend.state.store import database_of

    with database_of(site.settings).write() as con:  # two collections: the charts draw lines
        con.executemany("INSERT INTO fetch_events (taxon, at, runs, bytes) VALUES (562, ?, 1, 9)",
                        [("2026-11-23T10:00:00Z",), ("2026-11-23T11:00:00Z",)])
    page.goto(served + "/")
    page.wait_for_selector("#charts .uplot canvas")  # uPlot, a file of this site, ran
    site.registry.update(562, needs_attention="disk full")
    # The dashboard's own (nonce-carrying) scripts refresh the overview from the API.
    page.locator("#attention-list", has_text="disk full").wait_for(timeout=20_000)
    page.goto(served + "/taxa/562")
    page.wait_for_selector("#charts .uplot canvas")
    page.close()
    assert refused == []


def test_an_admin_can_sign_in_and_act_with_the_keyboard_alone(browser, served, site):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(served + "/taxa/562")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.focus("#admin-token")
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    page.wait_for_selector("#sign-out")
    assert page.url == served + "/taxa/562"  # back where the admin signed in
    page.focus("#priority")
    page.keyboard.press("Control+A")
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=priority set to 7")
    assert site.registry.get(562).priority == 7
    page.close()


def test_the_dashboard_shows_the_progress_of_a_running_demo(browser, tmp_path):
    port = free_port()
    env = cli_env(tmp_path)
    demo = subprocess.Popen(
        [sys.executable, "-c", "import sys; from backend.cli.main import main; "
         f"sys.exit(main(['demo', '--port', '{port}', '--folder', {str(tmp_path / 'demo')!r}]))"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = demo.stdout.readline()
            match = re.search(r"dashboard: (\S+)", line)
            url = match.group(1) if match else ""
        assert url, "the demo printed no dashboard URL"
        page = browser.new_page()
        page.set_default_timeout(15_000)
        for _ in range(40):  # bounded: about 60 s
            try:
                page.goto(url)
                if page.locator("td.status", has_text="complete").count() >= 3:
                    break
            except Exception:  # the server may not listen yet
                pass
            time.sleep(1.5)
        statuses = page.locator("td.status").all_inner_texts()
        assert statuses.count("complete") == 3, statuses
        assert "6 of 6" in page.inner_text("#taxa")
        # Two charts (runs, data), each with a legend naming every taxon and the overall line.
        page.wait_for_selector("#charts .uplot")
        assert page.locator("#charts .uplot").count() == 2
        labels = page.locator("#charts .u-legend").first.locator(".u-label").all_inner_texts()
        assert labels[1] == "all taxa" and len(labels) == 5, labels  # time, all, 3 taxa
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.close()
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def busy(site) -> None:
    """Three taxa fetched over six hours, 5,000 runs of 562, a parked taxon, a priced worker."""
    from datetime import timedelta

    from backend.state.registry import Status, Taxon
    from backend.state.store import database_of
    from backend.timeutil import format_time

    with site.registry.transaction("test") as table:
        table[1280] = Taxon(1280, "Staphylococcus aureus", last_run_status=Status.COMPLETE)
        table[1773] = Taxon(1773, "Mycobacterium tuberculosis", needs_attention="disk full",
                            last_run_status=Status.ERROR)
    with AccessionList.of(site.settings, 562).edit() as runs:
        for i in range(5000):
            accession = f"SRR{7000000 + i}"
            runs[accession] = Run(
                accession, fastq_files=(f"{accession}_1.fastq.gz", f"{accession}_2.fastq.gz"),
                fastq_bytes=(1_000_000 + 997 * i, 1_000_000 + 991 * i), attempts=i % 3,
                status=RunStatus.FETCHED if i < 3000 else RunStatus.PENDING,
                fetched_at=utc_now() if i < 3000 else None)
        runs["SRR7004999"].exclude(Exclusion.LAYOUT, "SINGLE")
    now = utc_now()
    with database_of(site.settings).write() as con:
        for step in range(72):  # every 5 minutes for six hours
            at = format_time(now - timedelta(minutes=5 * (72 - step)))
            for taxon, runs_each in ((562, 40), (1280, 7), (1773, 3)):
                if taxon != 1773 or step < 40:
                    con.execute("INSERT INTO fetch_events (taxon, at, runs, bytes) "
                                "VALUES (?, ?, ?, ?)",
                                (taxon, at, runs_each, runs_each * 2_600_000))
    site.registry.note(562, "cost_estimate", {"droplets": 2, "hours": 4.0,
                                              "droplet_cost": 0.14, "total": 3.1,
                                              "text": "2 droplets, 4 droplet-hours $0.14"},
                       "dispatcher")
    log = site.settings.log_dir / "562.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("2026-11-23 10:00:00 | ERROR | ENA did not answer: 503\n"
                   "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "EnaError: 503\n2026-11-23 10:05:00 | INFO | ENA answered again\n")


def test_an_operator_reads_the_overview_and_pages_and_searches_a_large_taxon(
        browser, served, site):
    busy(site)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page.set_default_timeout(15_000)
    page.goto(served + "/")
    page.wait_for_selector("#charts .uplot")
    assert "disk full" in page.inner_text("#attention-list")
    assert page.locator("#workers tbody tr").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    found = {"/": violations(page)}

    page.goto(served + "/taxa/562")
    page.wait_for_selector("#charts .uplot")
    assert "a traceback was left out here" in page.inner_text("pre")
    page.screenshot(path=str(ARTIFACTS / "taxon.png"), full_page=True)
    found["/taxa/562"] = violations(page)

    page.goto(served + "/taxa/562/runs?sort=size&order=desc&limit=200")
    seen: list[str] = []
    for _ in range(30):  # 5,000 runs in 200s: 25 pages, bounded
        seen += page.locator("#runs tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.accession)")
        if page.locator("#next-page").count() == 0:
            break
        with page.expect_navigation():
            page.click("#next-page")
    assert len(seen) == len(set(seen)) == 5000
    assert seen[0] == "SRR7004999"  # the largest first
    found["/taxa/562/runs"] = violations(page)

    page.fill("#q", "srr7001234")
    with page.expect_navigation():
        page.click("#search")
    assert page.locator("#runs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.accession)") == ["SRR7001234"]
    link = page.locator('#runs a[href^="https://www.ebi.ac.uk/ena/browser/view/"]')
    assert link.get_attribute("href").endswith("/SRR7001234")
    page.screenshot(path=str(ARTIFACTS / "runs-search.png"), full_page=True)
    page.close()
    assert found == {key: [] for key in found}


def test_the_overview_numbers_change_without_a_reload(browser, served, site):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(served + "/")
    page.evaluate("window.notReloaded = true")
    with AccessionList.of(site.settings, 562).edit() as runs:
        runs["ERR1"] = Run("ERR1", status=RunStatus.FETCHED, fastq_bytes=(10,))
    page.locator('[data-o="totals.fetched"]', has_text="1").wait_for(timeout=20_000)
    assert page.evaluate("window.notReloaded") is True
    page.close()
