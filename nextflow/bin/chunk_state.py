"""The runner's state on disk: its options, the manifest of finished runs, and DONE.json's summary.

``out/manifest.tsv`` lists every finished run, one row per file, and is rewritten atomically
each time a run finishes (its format is documented in docs/src/worker.md). Standard library
only, Python 3.9 or newer.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from fetch_run import MANIFEST_HEADER, TRANSIENT, Expected, Result, utc_stamp

#: How long a child (Nextflow, an assembler) gets after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 60


def end_process(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
    """Stop a child: SIGTERM so it ends its own children, SIGKILL after ``grace``; its code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()

Runs = list[tuple[str, list[Expected]]]


@dataclass(frozen=True)
class Options:
    """How the chunk is fetched: run_chunk.py's command line."""

    parallel: int = 4
    retries: int = 3
    timeout: float = 60.0
    transient_budget: float = 600.0
    profile: str = "standard"
    backoff: float = 2.0


def log(message: str) -> None:
    """One line on stderr, stamped in UTC (the runner's log)."""
    print(f"{utc_stamp()} {message}", file=sys.stderr, flush=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_rows(path: Path) -> list[Result]:
    """Manifest rows (``out/manifest.tsv`` or a task's verdict) as Results."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError:
        return []
    results = []
    for row in rows:
        try:
            results.append(Result(
                row["run"], row["file"], int(row["bytes"]), row["md5"], row["status"] == "ok",
                row.get("error") or "", cause=row.get("cause") or "",
                attempts=int(row.get("attempts") or 0), finished_at=row.get("finished_at") or ""))
        except (KeyError, ValueError):
            continue  # a row we cannot read is a run not finished: it will be fetched again
    return results


class Manifest:
    """``out/manifest.tsv``: every finished run, rewritten atomically each time one finishes."""

    def __init__(self, out: Path, runs: Runs) -> None:
        self.path = out / "manifest.tsv"
        self.out = out
        self.order = [run for run, _ in runs]
        self.files = dict(runs)
        self.rows: dict[str, list[Result]] = {}
        self.lock = threading.Lock()

    def load(self) -> None:
        """Take over what an earlier runner finished; runs whose files went missing are not."""
        by_run: dict[str, list[Result]] = {}
        for result in read_rows(self.path):
            by_run.setdefault(result.run, []).append(result)
        for run, results in by_run.items():
            if run in self.files and self._whole(run, results):
                self.rows[run] = results

    def _whole(self, run: str, results: list[Result]) -> bool:
        names = {want.name for want in self.files[run]}
        if {r.file for r in results} != names:
            return False
        if reads_deleted(self.out / run, run):  # assembled, and only the products go home
            return True
        return all(not r.ok or size_of(self.out / run / r.file) == r.size for r in results)

    def finished(self) -> set[str]:
        """The runs the manifest holds."""
        with self.lock:
            return set(self.rows)

    def record(self, run: str, results: list[Result]) -> None:
        """Enter a finished run and rewrite the manifest at once."""
        with self.lock:
            self.rows[run] = results
            self._write()
        verdict = "ok" if all(r.ok for r in results) else "FAILED: " + "; ".join(
            f"{r.error} [{r.cause}]" for r in results if not r.ok)
        log(f"{run}: {verdict}")

    def _write(self) -> None:
        lines = ["\t".join(MANIFEST_HEADER)]
        for run in self.order:
            lines.extend("\t".join(r.row()) for r in self.rows.get(run, []))
        write_atomic(self.path, "\n".join(lines) + "\n")

    def all_rows(self) -> list[Result]:
        """Every row, in chunk order."""
        with self.lock:
            return [r for run in self.order for r in self.rows.get(run, [])]


def size_of(path: Path) -> int:
    """A file's size, -1 when it is not there."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def reads_deleted(run_dir: Path, run: str) -> bool:
    """The run's assembly report says its reads were deleted on purpose, not lost."""
    try:
        report = json.loads((run_dir / f"{run}.assembly.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and bool(report.get("reads_deleted"))


def summary(rows: list[Result], status: str = "done") -> dict[str, object]:
    """DONE.json's body for the manifest rows ``rows``."""
    by_run: dict[str, list[Result]] = {}
    for r in rows:
        by_run.setdefault(r.run, []).append(r)
    failed = [rs for rs in by_run.values() if not all(r.ok for r in rs)]
    return {
        "status": status,
        "runs_ok": len(by_run) - len(failed),
        "runs_failed": len(failed),
        # failed only for the host's fault: home gives these back without counting an attempt
        "runs_transient": sum(all(r.ok or r.cause == TRANSIENT for r in rs) for rs in failed),
        "bytes": sum(r.size for r in rows if r.ok),
        "finished_at": utc_stamp(),
    }
