"""A file's bytes from an offset, over HTTP(S) or FTP, with every failure given its cause.

``content`` failures are properties of the file (HTTP 404, 410, 403, FTP 550) and are not
retried; everything else a host can do wrong (network errors, timeouts, 5xx, FTP 4xx, a cut
connection) is ``transient``. Standard library only, Python 3.9 or newer.
"""

from __future__ import annotations

import ftplib
import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

BUFFER = 1 << 20
USER_AGENT = "microfetch-worker/1"
CONTENT, TRANSIENT, STOPPED = "content", "transient", "stopped"
TRANSIENT_HTTP = (408, 425, 429)


class FetchError(Exception):
    """A file that could not be fetched; ``permanent`` errors are not retried."""

    def __init__(self, message: str, permanent: bool = False, cause: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.cause = cause or (CONTENT if permanent else TRANSIENT)


def _http_error(exc: urllib.error.HTTPError, url: str) -> FetchError:
    transient = exc.code >= 500 or exc.code in TRANSIENT_HTTP
    return FetchError(f"HTTP {exc.code} {exc.reason} for {url}", permanent=not transient)


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
        raise _http_error(exc, url) from None
    resumed = response.status == 206

    def chunks() -> Iterator[bytes]:
        with response:
            # read1 hands over what arrived, so bytes before a cut are kept for the resume
            chunk = response.read1(BUFFER)
            while chunk:
                yield chunk
                chunk = response.read1(BUFFER)
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
        # 550: no such file, a property of the file; other 5xx replies may pass
        raise FetchError(f"FTP {exc} for {url}", permanent=str(exc).startswith("550")) from None

    def chunks() -> Iterator[bytes]:
        try:
            chunk = conn.recv(BUFFER)
            while chunk:
                yield chunk
                chunk = conn.recv(BUFFER)
            conn.close()
            ftp.voidresp()  # 226 when the server sent it all; an error when it was cut
        finally:
            conn.close()
            ftp.close()

    return chunks(), True


def open_stream(url: str, offset: int, timeout: float) -> tuple[Iterator[bytes], bool]:
    """Chunks of ``url`` from ``offset`` on (HTTP or FTP), and whether it resumed."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return _http_stream(url, offset, timeout)
    if scheme == "ftp":
        return _ftp_stream(url, offset, timeout)
    raise FetchError(f"{url}: scheme {scheme!r} is not http, https or ftp", permanent=True)


TRANSIENT_ERRORS = (OSError, socket.timeout, http.client.HTTPException, ftplib.Error, EOFError)
