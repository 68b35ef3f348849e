"""The one wrapper for HTTP to ENA: a session with timeouts, a User-Agent, a rate limit,
bounded retries honouring Retry-After, and errors turned into :class:`EnaError`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

from backend import __version__
from backend.add_taxa import UnknownToEna
from backend.errors import OperationError
from backend.settings import Settings

FIELDS = (
    "run_accession", "experiment_accession", "sample_accession", "study_accession", "tax_id",
    "scientific_name", "instrument_platform", "instrument_model", "library_strategy",
    "library_source", "library_selection", "library_layout", "read_count", "base_count",
    "fastq_ftp", "fastq_bytes", "fastq_md5", "first_public", "last_updated",
)
USER_AGENT = f"microfetch/{__version__} (+https://github.com/microfetch/microfetch)"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 120.0


class EnaError(OperationError):
    """ENA did not give a usable answer; carries the taxon, the HTTP status and the URL."""

    def __init__(self, message: str, *, taxon: int | None = None, status: int | None = None,
                 url: str = "", permanent: bool = False) -> None:
        super().__init__(message, permanent=permanent)
        self.taxon, self.status, self.url = taxon, status, url


class RateLimit:
    """At most ``rate`` requests per second across threads."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval, self.clock, self.sleep = 1.0 / rate, clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            self.sleep(delay)


class EnaClient:
    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, backoff: float = 1.0) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.sleep, self.backoff = sleep, backoff
        self.limit = RateLimit(settings.ena_max_rps, sleep=sleep)

    def _call(self, method: str, url: str, taxon: int | None, **kwargs: Any) -> requests.Response:
        """One request with bounded retries; the caller closes a streamed response."""
        timeout = self.settings.ena_timeout
        last = ""
        for attempt in range(self.settings.ena_retries + 1):
            self.limit.wait()
            try:
                response = self.session.request(method, url, timeout=(timeout, timeout), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                self._pause(attempt, None)
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            last = f"HTTP {response.status_code}"
            retry_after = response.headers.get("Retry-After")
            response.close()
            self._pause(attempt, retry_after)
        raise EnaError(
            f"ENA did not answer {url} after {self.settings.ena_retries + 1} tries ({last}); "
            "it is tried again at the taxon's next turn", taxon=taxon, url=url,
        )

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        if attempt >= self.settings.ena_retries:
            return
        try:
            delay = min(float(retry_after), MAX_RETRY_AFTER) if retry_after else None
        except ValueError:
            delay = None
        self.sleep(delay if delay is not None else self.backoff * 2 ** attempt)

    def _refuse(self, response: requests.Response, taxon: int | None) -> None:
        """Turn a 4xx into a permanent error that quotes ENA's own reason."""
        if response.status_code >= 400:
            reason = response.text.strip()[:300] or response.reason
            raise EnaError(f"ENA refused {response.url} with HTTP {response.status_code}: "
                           f"{reason}", taxon=taxon, status=response.status_code,
                           url=response.url, permanent=True)

    def count(self, query: str, taxon: int | None = None) -> int:
        """The number of read_run rows matching ``query`` (ENA's count endpoint)."""
        url = f"{self.settings.ena_portal_url}/count"
        response = self._call("GET", url, taxon, params={
            "result": "read_run", "query": query, "format": "tsv"})
        self._refuse(response, taxon)
        lines = response.text.split()
        if len(lines) != 2 or lines[0] != "count" or not lines[1].isdigit():
            raise EnaError(f"ENA's count for {query!r} is not `count` and a number: "
                           f"{response.text[:200]!r}", taxon=taxon, url=url)
        return int(lines[1])

    def search_to_file(self, query: str, fields: Sequence[str], dest: Path,
                       taxon: int | None = None, progress: bool | None = None) -> int:
        """Stream the read_run TSV for ``query`` into ``dest``; returns its data rows."""
        url = f"{self.settings.ena_portal_url}/search"
        data = {"result": "read_run", "query": query, "fields": ",".join(fields),
                "format": "tsv", "limit": "0"}
        for attempt in range(self.settings.ena_retries + 1):
            response = self._call("POST", url, taxon, data=data, stream=True)
            try:
                self._refuse(response, taxon)
                return _stream_tsv(response, fields, dest, taxon,
                                   sys.stderr.isatty() if progress is None else progress)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == self.settings.ena_retries:
                    raise EnaError(f"ENA's answer to {query!r} broke off ({exc}); it is "
                                   "tried again at the taxon's next turn", taxon=taxon,
                                   url=url) from None
                self._pause(attempt, None)
            finally:
                response.close()
        raise AssertionError("unreachable")

    def taxonomy_name(self, taxon_id: int) -> str:
        """The scientific name of a taxon; UnknownToEna for an id ENA does not know."""
        url = f"{self.settings.ena_taxonomy_url}/tax-id/{taxon_id}"
        response = self._call("GET", url, taxon_id)
        if response.status_code == 404:
            raise UnknownToEna(f"ENA's taxonomy does not know {taxon_id} (404 No results); "
                               "check the id at https://www.ebi.ac.uk/ena/browser/")
        self._refuse(response, taxon_id)
        try:
            body = response.json()
        except ValueError:
            raise EnaError(f"ENA's taxonomy answer for {taxon_id} is not JSON", taxon=taxon_id,
                           url=url) from None
        record = body[0] if isinstance(body, list) and body else body
        return str(record.get("scientificName", "")) if isinstance(record, dict) else ""


def _stream_tsv(response: requests.Response, fields: Sequence[str], dest: Path,
                taxon: int | None, progress: bool) -> int:
    """Write the body to ``dest`` chunk by chunk, checking its header; returns data rows."""
    if response.status_code == 204:
        dest.write_text("")
        return 0
    rows = received = 0
    header_checked = False
    with open(dest, "wb") as handle:
        for chunk in response.iter_content(chunk_size=1 << 20):
            if not header_checked:
                _check_header(chunk, fields, response.url, taxon)
                header_checked = True
            handle.write(chunk)
            rows += chunk.count(b"\n")
            received += len(chunk)
            if progress:
                print(f"\r  {rows} rows, {received / 1e6:.1f} MB", end="", file=sys.stderr)
    if progress and received:
        print(file=sys.stderr)
    if received and not _ends_with_newline(dest):
        raise EnaError(f"ENA's answer from {response.url} ends mid-row: it was cut short; it "
                       "is tried again at the taxon's next turn", taxon=taxon, url=response.url)
    return max(rows - 1, 0)  # the header row is not a run


def _check_header(chunk: bytes, fields: Sequence[str], url: str, taxon: int | None) -> None:
    text = chunk.lstrip()[:1000].decode("utf-8", "replace")
    if text.startswith("<"):
        raise EnaError(f"ENA answered {url} with an HTML page, not TSV; it is tried again at "
                       "the taxon's next turn", taxon=taxon, url=url)
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    missing = [f for f in fields if f not in header]
    if missing:
        raise EnaError(f"ENA's answer lacks the requested field(s) {', '.join(missing)}",
                       taxon=taxon, url=url)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def taxonomy_lookup(settings: Settings) -> Callable[[int], str]:
    """The look-up add_taxa uses: a name, UnknownToEna, or OperationError when unreachable."""
    # A person is waiting at the terminal: fail over to "added without a name" quickly.
    quick = settings.with_overrides(ena_retries=min(settings.ena_retries, 2),
                                    ena_timeout=min(settings.ena_timeout, 15.0))
    return EnaClient(quick, backoff=0.5).taxonomy_name
