#!/usr/bin/env python3
"""Fetch one run's FASTQ files, resumably, and verify each file's size and MD5.

Standard library only: this runs on workers (Nextflow puts ``bin/`` on PATH). A file is
written as ``<name>.part`` and renamed into place only when its size and MD5 match; a
``.part`` left by an interrupted attempt is resumed (HTTP ``Range``, FTP ``REST``), never
started again. A file already present with the right MD5 is not fetched again.
"""

from __future__ import annotations

import argparse
import ftplib
import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BUFFER = 1 << 20
USER_AGENT = "microfetch-worker/1"


class FetchError(Exception):
    """A file that could not be fetched; ``permanent`` errors are not retried."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Expected:
    url: str
    md5: str
    size: int

    @property
    def name(self) -> str:
        name = Path(urllib.parse.urlparse(self.url).path).name
        if not name or name in {".", ".."}:
            raise FetchError(f"{self.url} has no file name", permanent=True)
        return name


@dataclass(frozen=True)
class Result:
    run: str
    file: str
    size: int
    md5: str
    ok: bool
    error: str = ""
    fetched_bytes: int = 0


def md5_file(path: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    digest = digest or hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(BUFFER):
            digest.update(chunk)
    return digest


def _http_stream(url: str, offset: int, timeout: float) -> tuple[Iterator[bytes], bool]:
    """Chunks from ``offset`` on, and whether the server honoured the range."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return iter(()), True  # nothing left to send: the part is already whole
        raise FetchError(f"HTTP {exc.code} {exc.reason} for {url}",
                         permanent=exc.code in (400, 401, 403, 404, 410)) from None
    resumed = response.status == 206

    def chunks() -> Iterator[bytes]:
        with response:
            # read1 hands over what arrived, so bytes before a cut are kept for the resume
            while chunk := response.read1(BUFFER):
                yield chunk
            if response.length:  # the server promised more than it sent: a cut
                raise FetchError(f"connection to {url} closed {response.length} bytes early")

    return chunks(), resumed


def _ftp_stream(url: str, offset: int, timeout: float) -> tuple[Iterator[bytes], bool]:
    parsed = urllib.parse.urlparse(url)
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(parsed.hostname or "", parsed.port or 21)
    ftp.login(parsed.username or "anonymous", parsed.password or "microfetch@")
    ftp.voidcmd("TYPE I")
    try:
        conn = ftp.transfercmd(f"RETR {urllib.parse.unquote(parsed.path)}", rest=offset or None)
    except ftplib.error_perm as exc:
        ftp.close()
        raise FetchError(f"FTP {exc} for {url}", permanent=str(exc).startswith("550")) from None

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := conn.recv(BUFFER):
                yield chunk
            conn.close()
            ftp.voidresp()  # 226 when the server sent it all; an error when it was cut
        finally:
            conn.close()
            ftp.close()

    return chunks(), True


def open_stream(url: str, offset: int, timeout: float) -> tuple[Iterator[bytes], bool]:
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return _http_stream(url, offset, timeout)
    if scheme == "ftp":
        return _ftp_stream(url, offset, timeout)
    raise FetchError(f"{url}: scheme {scheme!r} is not http, https or ftp", permanent=True)


TRANSIENT = (OSError, socket.timeout, http.client.HTTPException, ftplib.Error, EOFError)


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
    with open(part, "ab" if resumed and offset else "wb") as handle:
        for chunk in chunks:
            if stop.is_set():
                raise FetchError("stopped", permanent=True)
            handle.write(chunk)
            digest.update(chunk)
            received += len(chunk)
    return received, digest


def fetch_file(run: str, want: Expected, outdir: Path, *, timeout: float = 60, retries: int = 3,
               backoff: float = 2.0, stop: threading.Event | None = None,
               sleep: Callable[[float], None] = time.sleep) -> Result:
    """Fetch one file into ``outdir``, resuming and retrying; never raises."""
    stop = stop or threading.Event()
    try:
        target = outdir / want.name
    except FetchError as exc:
        return Result(run, want.url, want.size, want.md5, False, str(exc))
    if target.exists() and target.stat().st_size == want.size \
            and md5_file(target).hexdigest() == want.md5:
        return Result(run, target.name, want.size, want.md5, True)
    part = target.with_name(target.name + ".part")
    outdir.mkdir(parents=True, exist_ok=True)
    fetched, error = 0, ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            received, digest = _attempt(want, part, timeout, stop)
            fetched += received
        except FetchError as exc:
            error = str(exc)
            if exc.permanent:
                break
            continue
        except TRANSIENT as exc:
            error = f"{type(exc).__name__}: {exc} while fetching {want.url}"
            continue
        error = _verify(part, want, digest.hexdigest())
        if not error:
            os.replace(part, target)
            return Result(run, target.name, want.size, want.md5, True, "", fetched)
        part.unlink(missing_ok=True)  # wrong bytes: the next attempt starts from zero
    return Result(run, target.name, want.size, want.md5, False,
                  f"{target.name}: {error} (after {attempt + 1} attempts)", fetched)


def _verify(part: Path, want: Expected, got: str) -> str:
    size = part.stat().st_size if part.exists() else 0
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
        return [Expected(u, m.lower(), int(s)) for u, m, s in zip(*split, strict=True)]
    except ValueError:
        raise FetchError(f"bytes {sizes!r} are not whole numbers", permanent=True) from None


def fetch_run(run: str, files: list[Expected], outdir: Path, **options: object) -> list[Result]:
    """Every file of a run; one failed file does not stop the others."""
    return [fetch_file(run, want, outdir, **options) for want in files]  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and verify one run's FASTQ files.")
    parser.add_argument("--run", required=True, help="run accession, e.g. ERR123456")
    parser.add_argument("--urls", required=True, help="full URLs, ';'-joined")
    parser.add_argument("--md5s", required=True, help="expected MD5s, same order")
    parser.add_argument("--bytes", required=True, help="expected sizes, same order")
    parser.add_argument("--outdir", required=True, type=Path, help="where the files go")
    parser.add_argument("--timeout", type=float, default=60, help="stall timeout, s (60)")
    parser.add_argument("--retries", type=int, default=3, help="retries per file (3)")
    args = parser.parse_args(argv)
    try:
        files = expected_files(args.urls, args.md5s, args.bytes)
    except FetchError as exc:
        print(f"{args.run}: {exc}", file=sys.stderr)
        return 2
    results = fetch_run(args.run, files, args.outdir, timeout=args.timeout, retries=args.retries)
    for result in results:
        if not result.ok:
            print(f"{args.run}: {result.error}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
