"""The checks a command makes before it relies on the pipeline, its tools and its settings."""

from __future__ import annotations

import importlib
import shutil
from typing import TYPE_CHECKING

from backend.errors import UsageError
from backend.pipeline import pipeline_problems

if TYPE_CHECKING:
    from backend.settings import Settings

def tool_problems(backend: str, which: object = shutil.which) -> list[str]:
    """Programs that collection needs on PATH: rsync always, ssh for remote backends."""
    tools = ["rsync"] + (["ssh"] if backend in {"ssh", "digitalocean"} else [])
    return [f"`{tool}` is not on PATH (install it, e.g. `apt-get install "
            f"{'openssh-client' if tool == 'ssh' else tool}`)"
            for tool in tools if not which(tool)]  # type: ignore[operator]


def backend_problems(settings: Settings) -> list[str]:
    """What the chosen compute backend needs set before it may start workers."""
    if settings.backend == "local":
        return []
    # Imported only when chosen: paramiko and python-digitalocean stay out of the local path.
    module = importlib.import_module(f"backend.compute.{settings.backend}")
    return module.startup_problems(settings)


def preflight(settings: Settings) -> None:
    """Refuse to start (UsageError) when workers could not run or data could not come home."""
    assert settings.pipeline_dir is not None
    missing = pipeline_problems(settings.pipeline_dir)
    problems = missing + tool_problems(settings.backend) + backend_problems(settings)
    if not problems:
        return
    hint = (" Set MICROFETCH_PIPELINE_DIR to a folder holding main.nf and bin/run_chunk.py, "
            "or unset it to use the pipeline installed with microfetch." if missing else "")
    raise UsageError("cannot start: " + "; ".join(p.rstrip(";") for p in problems) + "." + hint)
