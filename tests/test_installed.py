"""The product as users get it: the wheel, installed into a fresh virtual environment outside
the checkout, run from an unrelated folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation when the test environment has a new enough setuptools (fast);
    # with it otherwise, as any user's `pip install .` would do.
    for extra in (["--no-build-isolation"], []):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *extra, "-w", str(out),
             str(ROOT)], capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr
    return next(out.glob("microfetch-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with only the wheel and its declared dependencies; returns its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                             str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return venv / "bin"


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MICROFETCH_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(MICROFETCH_CSV=str(folder / "microfetch.csv"),
               MICROFETCH_DATA_DIR=str(folder / "data"), **extra)
    return env


def test_the_wheel_carries_the_pipeline_and_the_licence(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("microfetch_pipeline/main.nf", "microfetch_pipeline/nextflow.config",
                   "microfetch_pipeline/bin/run_chunk.py", "microfetch_pipeline/bin/fetch_run.py",
                   "web/templates/dashboard.html"):
        assert needed in names
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_every_package_under_src_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {str(init.parent.relative_to(ROOT / "src")).replace(os.sep, ".")
             for init in (ROOT / "src").rglob("__init__.py")}
    assert found <= listed


def test_each_backend_imports_from_a_clean_install(installed: Path, tmp_path: Path):
    code = ("import backend.compute.local, backend.compute.ssh, backend.compute.digitalocean, "
            "backend.compute.cloudinit, web; from backend.pipeline import bundled_pipeline_dir; "
            "print(bundled_pipeline_dir())")
    result = subprocess.run([str(installed / "python"), "-c", code], cwd=tmp_path,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pipeline = Path(result.stdout.strip())
    assert (pipeline / "bin" / "run_chunk.py").is_file()
    assert ROOT not in pipeline.parents  # the installed copy, not this checkout


def test_version_comes_from_the_package_metadata(installed: Path, tmp_path: Path):
    result = subprocess.run([str(installed / "add_taxa.py"), "--version"], cwd=tmp_path,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout.strip() == f"microfetch {version}"


@pytest.mark.parametrize("backend", ["local", "ssh", "digitalocean"])
def test_a_missing_pipeline_stops_each_backend_before_it_starts(installed: Path, tmp_path: Path,
                                                                backend: str):
    env = _env(tmp_path, MICROFETCH_BACKEND=backend,
               MICROFETCH_PIPELINE_DIR=str(tmp_path / "nowhere"))
    result = subprocess.run([str(installed / "microfetch"), "tick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"the pipeline folder {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "MICROFETCH_PIPELINE_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_digitalocean_backend_says_what_to_set_from_a_clean_install(installed: Path,
                                                                      tmp_path: Path):
    env = _env(tmp_path, MICROFETCH_BACKEND="digitalocean")
    result = subprocess.run([str(installed / "microfetch"), "tick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "DIGITALOCEAN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_runs_to_completion_from_an_unrelated_folder(installed: Path, tmp_path: Path):
    folder = tmp_path / "demo"
    port = _free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    demo = subprocess.Popen([str(installed / "microfetch"), "demo", "--port", str(port),
                             "--folder", str(folder)], cwd=elsewhere, env=_env(elsewhere),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env = _env(folder)
    try:
        rows: list[dict] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            result = subprocess.run([str(installed / "microfetch"), "status", "--json"],
                                    cwd=elsewhere, env=env, capture_output=True, text=True,
                                    timeout=60)
            rows = json.loads(result.stdout) if result.returncode == 0 else []
            if rows and all(row["last_run_status"] == "complete" for row in rows):
                break
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            time.sleep(2)
        assert rows and all(row["last_run_status"] == "complete" for row in rows), rows
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    for row in rows:
        sheet = folder / "data" / "genomes" / str(row["taxonomy_id"]) / "samplesheet.csv"
        lines = sheet.read_text().splitlines()
        assert len(lines) > 1
        for line in lines[1:]:
            for path in line.split(",")[1:]:
                if path:
                    assert Path(path if Path(path).is_absolute() else sheet.parent / path).is_file()
