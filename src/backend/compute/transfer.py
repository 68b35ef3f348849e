"""The one wrapper for subprocesses that move data (rsync, ssh): build the argv, then run it."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from backend.errors import OperationError

PARTIAL_DIR = ".rsync-partial"


def rsync_pull_argv(source: str, dest: Path, io_timeout: int,
                    rsh: Sequence[str] | None = None) -> list[str]:
    """rsync argv pulling ``source`` (a folder, trailing slash added) into ``dest``.

    ``--partial-dir`` keeps a cut transfer's bytes for the next attempt instead of leaving a
    half file under the real name; ``--timeout`` ends a transfer that stops moving.
    """
    argv = [
        "rsync", "--recursive", "--times", "--partial", f"--partial-dir={PARTIAL_DIR}",
        f"--timeout={io_timeout}", "--exclude=*.part", "--exclude=.work",
    ]
    if rsh:
        argv += ["-e", shlex.join(rsh)]
    return [*argv, source.rstrip("/") + "/", str(dest).rstrip("/") + "/"]


def run(argv: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run a command; OperationError naming ``what`` when it fails.

    No wall-clock limit: rsync's own ``--timeout`` ends a transfer that stops moving and keeps
    its partial file, while a large transfer that moves may take as long as it needs.
    """
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise OperationError(
            f"{what} failed: {argv[0]} is not installed (apt-get install {argv[0]})",
            permanent=True,
        ) from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OperationError(
            f"{what} failed with exit code {result.returncode}: "
            f"{detail[-1] if detail else 'no output'}"
        )
    return result
