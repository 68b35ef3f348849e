"""Headers, cookies, sign-in redirects, CSRF and what anonymous callers can learn."""

from __future__ import annotations

import re

import pytest

from backend.timeutil import utc_now
from web import create_app

from .conftest import ADMIN


def test_every_answer_forbids_framing_sniffing_and_inline_script_without_the_nonce(site):
    for path in ("/", "/taxa/562", "/api/taxa", "/healthz", "/taxa/4242"):
        headers = site.client.get(path).headers
        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"


def test_the_page_s_inline_script_and_style_carry_this_answer_s_nonce(site):
    nonces = []
    for _ in range(2):
        response = site.client.get("/")
        nonce = re.search(r"script-src 'nonce-([^']+)'",
                          response.headers["Content-Security-Policy"]).group(1)
        page = response.get_data(as_text=True)
        assert f'<script nonce="{nonce}">' in page and f'<style nonce="{nonce}">' in page
        assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
        assert ' style="' not in page  # no inline style attributes either
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


def session_cookie(response) -> str:
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    return cookie


def sign_in(client, **environ):
    return client.post("/admin/login", data={"token": ADMIN, "next": "/"}, **environ)


def test_the_session_cookie_is_secure_over_https_and_never_leaves_httponly_samesite(site):
    plain = session_cookie(sign_in(site.client))
    assert "HttpOnly" in plain and "SameSite=Strict" in plain and "Secure" not in plain
    https = session_cookie(sign_in(site.app.test_client(), base_url="https://localhost"))
    assert "Secure" in https
    assert "Strict-Transport-Security" in sign_in(
        site.app.test_client(), base_url="https://localhost").headers


def test_behind_a_tls_proxy_the_forwarded_scheme_makes_the_cookie_secure(site):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    # Without the setting the header is anyone's claim and is ignored.
    ignored = sign_in(site.app.test_client(), headers=forwarded)
    assert "Secure" not in session_cookie(ignored)
    proxied = create_app(site.settings.with_overrides(behind_proxy=True))
    trusted = sign_in(proxied.test_client(), headers=forwarded)
    assert "Secure" in session_cookie(trusted)


def test_every_401_says_how_to_authenticate(site):
    admin = site.client.post("/api/taxa", json={"taxonomy_ids": [7]},
                             headers={"Authorization": "Bearer wrong"})
    worker = site.client.post("/api/workers/mf-562-0-abcdef/callback", json={},
                              headers={"Authorization": "Bearer wrong"})
    for response in (admin, worker):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example",
                                    "/\t/evil.example", "javascript:alert(1)", "", "taxa/562"])
def test_sign_in_never_redirects_off_the_site(site, target):
    response = site.client.post("/admin/login", data={"token": ADMIN, "next": target},
                                headers={"Referer": "https://evil.example/phish"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_sign_in_goes_back_to_the_page_it_came_from(site):
    response = site.client.post("/admin/login", data={"token": ADMIN, "next": "/taxa/562"})
    assert response.headers["Location"] == "/taxa/562"


def test_a_non_ascii_csrf_value_or_token_is_refused_not_a_server_error(site):
    assert site.client.post("/admin/login", data={"token": "tökén"}).status_code == 302
    assert "that is not the admin token" in site.client.get("/").get_data(as_text=True)
    sign_in(site.client)
    before = site.registry.path.read_bytes()
    for value in ("é", "☃" * 40, "\x00"):
        response = site.client.post("/taxa", data={"ids": "1280", "csrf": value})
        assert response.status_code == 403
    response = site.client.post("/api/taxa", json={"taxonomy_ids": [7]},
                                headers={"Authorization": "Bearer tökén"})
    assert response.status_code == 401
    assert site.registry.path.read_bytes() == before


def test_anonymous_answers_name_no_server_path(site):
    where = str(site.settings.csv_path.parent)
    for path in ("/api/taxa/4242", "/taxa/4242", "/api/taxa/4242/nothing", "/nothing"):
        response = site.client.get(path)
        assert response.status_code == 404
        assert where not in response.get_data(as_text=True)
    site.daemon.scheduler_running = True
    site.daemon.started_at = site.daemon.last_heartbeat = utc_now()
    site.registry.path.write_text("taxonomy_id,stage\nabc,check\n")
    health = site.client.get("/healthz")
    assert health.status_code == 503
    assert where not in health.get_data(as_text=True)


def test_a_form_without_its_fields_is_400_and_changes_nothing(site):
    sign_in(site.client)
    page = site.client.get("/taxa/562").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    before = site.registry.path.read_bytes()
    assert site.client.post("/taxa/562/action", data={"csrf": csrf}).status_code == 400
    assert site.client.post("/taxa/562/action",
                            data={"csrf": csrf, "action": "drop"}).status_code == 400
    assert site.client.post("/taxa", data={"csrf": csrf}).status_code == 400
    assert site.client.post("/admin/login", data={}).status_code == 400
    assert site.registry.path.read_bytes() == before
    too_high = site.client.post("/taxa/562/action", follow_redirects=True,
                                data={"csrf": csrf, "action": "priority", "priority": "10**9"})
    assert "priority must be a whole number" in too_high.get_data(as_text=True)
    assert site.registry.path.read_bytes() == before


def test_server_paths_in_messages_and_logs_are_named_by_their_setting_for_anonymous_eyes(site):
    data = site.settings.data_dir.resolve()
    site.registry.update(562, needs_attention=f"disk full writing {data}/genomes/562")
    log = site.settings.log_dir / "562.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"2026-11-23 rsync into {data}/genomes/562 failed\n")
    answers = [site.client.get(path).get_data(as_text=True)
               for path in ("/api/taxa", "/api/taxa/562", "/", "/taxa/562")]
    for text in answers:
        assert str(data) not in text
        assert "$MICROFETCH_DATA_DIR/genomes/562" in text
    sign_in(site.client)  # the admin sees where to look
    assert f"{data}/genomes/562" in site.client.get("/taxa/562").get_data(as_text=True)
