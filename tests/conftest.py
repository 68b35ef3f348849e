"""Shared fixtures: a private registry and data folder per test, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

pytest_plugins = ["tests.loopback"]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a microfetch process working in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROFETCH_")}
    env.update(
        PYTHONPATH=str(SRC),
        MICROFETCH_CSV=str(tmp_path / "microfetch.csv"),
        MICROFETCH_DATA_DIR=str(tmp_path / "data"),
    )
    env.update(extra)
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `microfetch ARGS` (or `add_taxa.py ARGS` with add_taxa=True) as a user would."""

    def run(*args: str, add_taxa: bool = False, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        code = (
            "import sys; from backend.cli.main import add_taxa_main as m; sys.exit(m())"
            if add_taxa
            else "import sys; from backend.cli.main import main as m; sys.exit(m())"
        )
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env or cli_env(tmp_path), capture_output=True, text=True, timeout=timeout,
        )

    return run
