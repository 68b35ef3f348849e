"""The pages in headless Chromium (Debian's chromium, driven by playwright)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

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


def test_an_admin_adds_a_taxon_through_the_form_and_sees_it_in_the_table(browser, served):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(served + "/")
    assert page.locator("#add-ids").count() == 0  # no form before signing in
    page.fill("#admin-token", ADMIN)
    page.click("#sign-in")
    page.fill("#add-ids", "1280")
    page.click("#add-submit")
    page.wait_for_selector('tr[data-taxon="1280"]')
    assert "Staphylococcus aureus" in page.inner_text("#taxa")
    assert "added 1280" in page.content()
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


def test_the_dashboard_shows_the_progress_of_a_running_demo(browser, tmp_path):
    port = free_port()
    env = cli_env(tmp_path)
    demo = subprocess.Popen(
        [sys.executable, "-c", "import sys; from backend.cli import main; "
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
        assert page.locator("#plot polyline").count() == 3
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.close()
    finally:
        demo.terminate()
        demo.wait(timeout=30)
