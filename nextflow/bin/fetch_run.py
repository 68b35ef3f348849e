#!/usr/bin/env python3
"""Fetch one run's FASTQ files, resumably, and verify each file's size and MD5.

Standard library only, Python 3.9 or newer: this runs on workers (Nextflow puts ``bin/`` on
PATH). A file is written as ``<name>.part`` and renamed into place only when its size and MD5
match; a ``.part`` left by an interrupted attempt is resumed (HTTP ``Range``, FTP ``REST``),
never started again. A file already present with the right MD5 is not fetched again.

Failures have a cause. ``content`` is a property of the file (wrong MD5 or size, HTTP 404, 410,
403, FTP 550): retried ``--retries`` times at most, then reported. ``transient`` is the host's
fault (network error, timeout, 5xx, FTP 4xx): retried with exponential backoff until the host
has made no progress for ``--transient-budget`` seconds, so an outage of minutes costs nothing.

With ``--partial-dir`` the run's files are staged there (shared by every attempt of the run:
a retried Nextflow task or a restarted runner resumes from the partial size) and moved into
``--outdir`` together once every file is verified.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from streams import (
    BUFFER,
    CONTENT,
    STOPPED,
    TRANSIENT,
    TRANSIENT_ERRORS,
    FetchError,
    open_stream,
)

__all__ = ["CONTENT", "STOPPED", "TRANSIENT", "Backoff", "Expected", "FetchError", "Result",
           "expected_files", "fetch_file", "fetch_run", "md5_file", "open_stream", "utc_stamp"]

MAX_WAIT = 60.0          # cap on one transient backoff wait, s
MAX_TRIES = 500          # hard bound on tries of one file, whatever the budget says
MANIFEST_HEADER = ("run", "file", "bytes", "md5", "status", "error", "cause", "attempts",
                   "finished_at")
EXIT_FAILED = 1          # a file failed (without --report)
EXIT_USAGE = 2


@dataclass(frozen=True)
class Expected:
    """One file of a run as chunk.tsv describes it."""

    url: str
    md5: str
    size: int

    @property
    def name(self) -> str:
        """The file name, the last part of the URL's path."""
        name = Path(urllib.parse.urlparse(self.url).path).name
        if not name or name in {".", ".."}:
            raise FetchError(f"{self.url} has no file name", permanent=True)
        return name


@dataclass(frozen=True)
class Result:
    """One manifest row: a file's verdict, its failure's cause and how often it was tried."""

    run: str
    file: str
    size: int
    md5: str
    ok: bool
    error: str = ""
    fetched_bytes: int = 0
    cause: str = ""
    attempts: int = 0
    finished_at: str = ""

    def row(self) -> list[str]:
        """The manifest columns, in ``MANIFEST_HEADER`` order."""
        error = self.error.replace("\t", " ").replace("\n", " ")
        return [self.run, self.file, str(self.size), self.md5, "ok" if self.ok else "failed",
                error, "" if self.ok else self.cause, str(self.attempts), self.finished_at]


def utc_stamp() -> str:
    """Now, as ISO-8601 UTC to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def md5_file(path: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """The MD5 of a file, continuing ``digest`` when given."""
    digest = digest or hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        chunk = handle.read(BUFFER)
        while chunk:
            digest.update(chunk)
            chunk = handle.read(BUFFER)
    return digest


def _attempt(want: Expected, part: Path, timeout: float,
             stop: threading.Event) -> tuple[int, hashlib._Hash]:
    """One try: resume ``part`` to the full size, hashing as it goes.

    Returns the bytes received and the MD5 of the whole part file.
    """
    offset = part.stat().st_size if part.exists() else 0
    if offset > want.size:
        part.unlink()
        offset = 0
    digest = md5_file(part) if offset else hashlib.md5(usedforsecurity=False)
    if offset == want.size:
        return 0, digest
    chunks, resumed = open_stream(want.url, offset, timeout)
    if offset and not resumed:  # the server ignored Range: start again from zero
        digest = hashlib.md5(usedforsecurity=False)
    received = 0
    # Unbuffered: every chunk received is in the file at once, so a runner killed with
    # SIGKILL loses nothing it had received and the restart resumes from the exact size.
    with open(part, "ab" if resumed and offset else "wb", buffering=0) as handle:
        for chunk in chunks:
            if stop.is_set():
                raise FetchError("stopped", permanent=True, cause=STOPPED)
            handle.write(chunk)
            digest.update(chunk)
            received += len(chunk)
    return received, digest


class _Tries:
    """How often a file was tried, kept beside its part file so restarts add up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.count = int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            self.count = 0

    def add(self) -> int:
        """Count one more try, on disk too."""
        self.count += 1
        with contextlib.suppress(OSError):
            self.path.write_text(f"{self.count}\n")
        return self.count

    def clear(self) -> None:
        """Forget the count once the file is verified."""
        self.path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _classify(exc: BaseException, want: Expected) -> FetchError:
    if isinstance(exc, FetchError):
        return exc
    return FetchError(f"{type(exc).__name__}: {exc} while fetching {want.url}")


def _present(target: Path, want: Expected) -> bool:
    return target.is_file() and target.stat().st_size == want.size \
        and md5_file(target).hexdigest() == want.md5


class Backoff:
    """Waits after transient failures: doubling up to a cap, until a budget without progress.

    Progress (bytes added to the part file) renews the budget and restarts the doubling, so a
    host that keeps sending is never given up, and one that sends nothing is given up after
    ``budget`` seconds.
    """

    def __init__(self, first: float, cap: float, budget: float,
                 clock: Callable[[], float]) -> None:
        self.first, self.cap, self.budget, self.clock = first, cap, budget, clock
        self.wait, self.quiet_since = first, clock()

    def next_wait(self, progressed: bool) -> float | None:
        """The wait before the next try, or None when the budget is spent."""
        if progressed:
            self.wait, self.quiet_since = self.first, self.clock()
        if self.clock() - self.quiet_since + self.wait > self.budget:
            return None
        wait, self.wait = self.wait, min(max(self.wait, 0.0) * 2, self.cap)
        return wait


def fetch_file(run: str, want: Expected, outdir: Path, *, timeout: float = 60,
               retries: int = 3, backoff: float = 2.0, transient_budget: float = 600.0,
               max_wait: float = MAX_WAIT, stop: threading.Event | None = None,
               sleep: Callable[[float], object] | None = None,
               clock: Callable[[], float] = time.monotonic) -> Result:
    """Fetch one file into ``outdir`` (its ``.part`` beside it), resuming; never raises."""
    stop = stop or threading.Event()
    sleep = sleep or stop.wait  # a stop request ends a backoff wait at once
    try:
        target = outdir / want.name
    except FetchError as exc:
        return Result(run, want.url, want.size, want.md5, False, str(exc), cause=CONTENT,
                      finished_at=utc_stamp())
    if _present(target, want):
        return Result(run, target.name, want.size, want.md5, True, finished_at=utc_stamp())
    outdir.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    tries = _Tries(target.with_name(target.name + ".tries"))
    waits = Backoff(backoff, max_wait, transient_budget, clock)
    fetched, mismatches, error = 0, 0, FetchError("not tried")
    for _ in range(MAX_TRIES):
        if stop.is_set():
            error = FetchError("stopped", permanent=True, cause=STOPPED)
            break
        tries.add()
        before = _size(part)
        try:
            received, digest = _attempt(want, part, timeout, stop)
        except (FetchError, *TRANSIENT_ERRORS) as exc:
            error = _classify(exc, want)
            wait = None if error.permanent else waits.next_wait(_size(part) > before)
            if wait is None:
                if not error.permanent:
                    error = FetchError(f"{error} (no progress for {transient_budget:g} s)")
                break
            sleep(wait)
            continue
        fetched += received
        message = _verify(part, want, digest.hexdigest())
        if not message:
            os.replace(part, target)
            tries.clear()
            return Result(run, target.name, want.size, want.md5, True, "", fetched,
                          attempts=tries.count, finished_at=utc_stamp())
        part.unlink(missing_ok=True)  # wrong bytes: the next attempt starts from zero
        error, mismatches = FetchError(message, cause=CONTENT), mismatches + 1
        if mismatches > retries:
            break
        sleep(min(backoff * 2 ** (mismatches - 1), max_wait))
    return Result(run, target.name, want.size, want.md5, False,
                  f"{target.name}: {error} (after {tries.count} attempts)", fetched,
                  cause=error.cause, attempts=tries.count, finished_at=utc_stamp())


def _verify(part: Path, want: Expected, got: str) -> str:
    size = _size(part)
    if size != want.size:
        return f"size {size} bytes, expected {want.size} from {want.url}"
    if got != want.md5:
        return f"MD5 {got}, expected {want.md5} from {want.url}"
    return ""


def expected_files(urls: str, md5s: str, sizes: str) -> list[Expected]:
    """Pair the ``;``-joined lists of chunk.tsv; they must be the same length."""
    split = [[p for p in field.split(";") if p] for field in (urls, md5s, sizes)]
    if len({len(part) for part in split}) != 1 or not split[0]:
        raise FetchError(f"urls, md5s and bytes do not pair up: {urls!r} {md5s!r} {sizes!r}",
                         permanent=True)
    try:
        return [Expected(u, m.lower(), int(s)) for u, m, s in zip(*split)]
    except ValueError:
        raise FetchError(f"bytes {sizes!r} are not whole numbers", permanent=True) from None


def fetch_run(run: str, files: list[Expected], outdir: Path, partial_dir: Path | None = None,
              **options: object) -> list[Result]:
    """Every file of a run; one failed file does not stop the others.

    With ``partial_dir`` the files are staged there and moved into ``outdir`` only when every
    one of them is verified, so ``outdir`` holds whole runs and a failed run's verified files
    wait in the stage for the next attempt.
    """
    stage = partial_dir or outdir
    results = []
    for want in files:
        already = _already_in(run, outdir, want) if partial_dir else None
        results.append(already or fetch_file(run, want, stage, **options))  # type: ignore[arg-type]
    if partial_dir and results and all(r.ok for r in results) \
            and not any(r.cause == STOPPED for r in results):
        _publish(partial_dir, outdir, [r.file for r in results])
    return results


def _already_in(run: str, outdir: Path, want: Expected) -> Result | None:
    try:
        target = outdir / want.name
    except FetchError:
        return None
    if not _present(target, want):
        return None
    return Result(run, target.name, want.size, want.md5, True, finished_at=utc_stamp())


def _publish(stage: Path, outdir: Path, names: list[str]) -> None:
    """Move the verified files of a whole run from the stage into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = stage / name
        if source.exists():
            shutil.move(str(source), str(outdir / name))  # a copy when on another disk
    shutil.rmtree(stage, ignore_errors=True)


def write_report(path: Path, results: list[Result]) -> None:
    """The run's verdict as manifest rows (with the header), written atomically."""
    lines = ["\t".join(MANIFEST_HEADER)] + ["\t".join(r.row()) for r in results]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fetch and verify one run's FASTQ files.")
    parser.add_argument("--run", required=True, help="run accession, e.g. ERR123456")
    parser.add_argument("--urls", required=True, help="full URLs, ';'-joined")
    parser.add_argument("--md5s", required=True, help="expected MD5s, same order")
    parser.add_argument("--bytes", required=True, help="expected sizes, same order")
    parser.add_argument("--outdir", required=True, type=Path, help="where the files go")
    parser.add_argument("--partial-dir", type=Path, default=None,
                        help="stage partial files here, shared by every attempt of the run")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the verdict here as manifest rows; exit 0 once written")
    parser.add_argument("--timeout", type=float, default=60, help="stall timeout, s (60)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a file whose content is wrong (3)")
    parser.add_argument("--transient-budget", type=float, default=600.0,
                        help="s without progress before a transient failure is final (600)")
    parser.add_argument("--backoff", type=float, default=2.0,
                        help="first wait after a failed try, s; doubles up to 60 (2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line: fetch one run, print its failures, exit 0 when all is well."""
    args = _parser().parse_args(argv)
    try:
        files = expected_files(args.urls, args.md5s, args.bytes)
    except FetchError as exc:
        print(f"{args.run}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = fetch_run(args.run, files, args.outdir, args.partial_dir, timeout=args.timeout,
                        retries=args.retries, transient_budget=args.transient_budget,
                        backoff=args.backoff)
    for result in results:
        if not result.ok:
            print(f"{args.run}: {result.error} [{result.cause}]", file=sys.stderr)
    if args.report:
        # The verdict is the answer, failed files included: the task itself succeeded.
        write_report(args.report, results)
        return 0
    return 0 if all(r.ok for r in results) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
