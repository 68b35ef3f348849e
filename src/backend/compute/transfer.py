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


def run(argv: Sequence[str], timeout: float | None, what: str,
        grace: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command; OperationError naming ``what`` when it fails.

    ``timeout`` None: no wall-clock limit (rsync's own ``--timeout`` ends a transfer that stops
    moving, keeping its partial file). When a limit is given and passed, the command gets
    SIGTERM — rsync then saves its partial file for the next pass — and SIGKILL only after
    ``grace`` seconds more.
    """
    try:
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    except FileNotFoundError as exc:
        raise OperationError(
            f"{what} failed: {argv[0]} is not installed (apt-get install {argv[0]})",
            permanent=True,
        ) from exc
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise OperationError(f"{what} took more than {timeout:.0f} s and was stopped; the "
                             "next pass resumes it") from None
    if process.returncode != 0:
        detail = (stderr or stdout).strip().splitlines()
        raise OperationError(
            f"{what} failed with exit code {process.returncode}: "
            f"{detail[-1] if detail else 'no output'}"
        )
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)
