"""The Dockerfile, compose file and CI files: lint them and check what can be checked here."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
import tomllib
from pathlib import Path

import yaml

from backend.settings import load_settings, setting_specs

from .conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_the_dockerfile_is_hadolint_clean():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_path_the_dockerfile_copies_exists():
    text = (ROOT / "Dockerfile").read_text()
    sources = [part for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
               for part in line.split()[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source


def test_the_command_the_image_runs_is_installed_by_the_package():
    text = (ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'CMD ["microfetch", "serve"]' in text
    assert 'CMD ["microfetch", "healthcheck"]' in text
    assert "microfetch" in scripts
    assert shutil.which("microfetch") or (ROOT / ".venv/bin/microfetch").exists()


def test_the_image_settings_are_valid_settings():
    text = (ROOT / "Dockerfile").read_text()
    env = dict(re.findall(r"(MICROFETCH_[A-Z_]+)=(\S+)", text))
    known = {spec["env"] for spec in setting_specs()}
    assert set(env) <= known
    load_settings(env)  # raises on a bad value


def test_compose_gives_the_daemon_more_time_to_stop_than_its_grace_period():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["microfetch"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    example = dict(line.split("=", 1) for line in
                   (ROOT / "microfetch.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert grace > int(example["MICROFETCH_SHUTDOWN_GRACE_SECONDS"])
    assert set(example) <= {spec["env"] for spec in setting_specs()}


def test_the_workflows_run_the_readme_test_command_and_publish_the_book():
    tests = yaml.safe_load((ROOT / ".github/workflows/test.yml").read_text())
    steps = [step.get("run", "") for job in tests["jobs"].values() for step in job["steps"]]
    assert any("bash scripts/test.sh" in run for run in steps)
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()
    pages = (ROOT / ".github/workflows/docs.yml").read_text()
    assert "mdbook build docs" in pages
    assert "actions/deploy-pages" in pages


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}' if self.status == 200 else b'{"problems": ["stale"]}'
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_healthcheck_exits_zero_only_when_the_server_says_healthy(run_cli, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = cli_env(tmp_path, MICROFETCH_BIND=f"0.0.0.0:{server.server_port}")
    try:
        assert run_cli("healthcheck", env=env).returncode == 0
        _Health.status = 503
        result = run_cli("healthcheck", env=env)
        assert result.returncode == 1
        assert "answered 503" in result.stderr
    finally:
        _Health.status = 200
        server.shutdown()
    result = run_cli("healthcheck", "--timeout", "2", env=env)
    assert result.returncode == 1
    assert "is `microfetch serve` running?" in result.stderr
