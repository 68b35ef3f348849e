"""Where the worker pipeline lives, and the checks a command makes before it relies on it.

The pipeline (`nextflow/` at the repository root) ships inside the wheel as the data package
``microfetch_pipeline``, so an installed microfetch finds it without any setting; a plain
checkout without an install falls back to the repository's folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from backend.errors import UsageError

if TYPE_CHECKING:
    from backend.settings import Settings

#: What a worker needs from the pipeline folder.
REQUIRED_FILES = ("main.nf", "nextflow.config", "bin/run_chunk.py", "bin/fetch_run.py")


def bundled_pipeline_dir() -> Path:
    """The pipeline shipped with this installation (wheel, sdist, editable or checkout)."""
    spec = importlib.util.find_spec("microfetch_pipeline")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "main.nf").is_file():
                return Path(location)
    checkout = Path(__file__).resolve().parents[2] / "nextflow"
    return checkout


def pipeline_problems(folder: Path) -> list[str]:
    """What is missing from a pipeline folder, each naming the path."""
    if not folder.is_dir():
        return [f"the pipeline folder {folder} does not exist"]
    return [f"{folder / name} is missing" for name in REQUIRED_FILES
            if not (folder / name).is_file()]


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
