"""Where the worker pipeline lives.

The pipeline (`nextflow/` at the repository root) ships inside the wheel as the data package
``microfetch_pipeline``, so an installed microfetch finds it without any setting; a plain
checkout without an install falls back to the repository's folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
