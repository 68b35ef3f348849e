"""The one wrapper for HTTP to ENA: a session with timeouts, a User-Agent, a rate limit,
bounded retries honouring Retry-After (the policy of :mod:`backend.retry`), and errors turned
into :class:`EnaError`.
"""

from __future__ import annotations

import codecs
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

from backend import __version__
from backend.errors import OperationError
from backend.retry import GaveUp, http_policy
from backend.settings import Settings
from backend.state.add_taxa import UnknownToEna

FIELDS = (
    "run_accession", "experiment_accession", "sample_accession", "study_accession", "tax_id",
    "scientific_name", "instrument_platform", "instrument_model", "library_strategy",
    "library_source", "library_selection", "library_layout", "read_count", "base_count",
    "fastq_ftp", "fastq_bytes", "fastq_md5", "first_public", "last_updated",
)
USER_AGENT = f"microfetch/{__version__} (+https://github.com/microfetch/microfetch)"
#: Bytes asked for per read of an answer.
CHUNK = 1 << 20
#: A header line longer than this is not ENA's.
MAX_HEADER = 1 << 16


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
                 sleep: Callable[[float], None] = time.sleep, backoff: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.sleep = sleep
        self.limit = RateLimit(settings.ena_max_rps, sleep=sleep)
        # No jitter: the rate limit already spaces every thread's requests.
        self.policy = http_policy(settings.ena_retries, base=backoff)

    def _call(self, method: str, url: str, taxon: int | None, **kwargs: Any) -> requests.Response:
        """One request with bounded retries; the caller closes a streamed response."""
        timeout = self.settings.ena_timeout

        def send() -> requests.Response:
            self.limit.wait()
            return self.policy.check(self.session.request(
                method, url, timeout=(timeout, timeout), **kwargs))

        try:
            return self.policy.call(send, sleep=self.sleep, clock=self.clock)
        except GaveUp as exc:
            raise EnaError(
                f"ENA did not answer {url} after {exc.tries} tries ({exc.last}); "
                "it is tried again at the taxon's next turn", taxon=taxon, url=url,
            ) from None

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
                       taxon: int | None = None, progress: bool | None = None,
                       expected: int | None = None) -> int:
        """Stream the read_run TSV for ``query`` into ``dest``; returns its data rows.

        ``expected`` (ENA's count) sizes the progress bar and the answer's overall deadline:
        the per-read timeout alone never ends an answer that dribbles a byte at a time.
        """
        url = f"{self.settings.ena_portal_url}/search"
        data = {"result": "read_run", "query": query, "fields": ",".join(fields),
                "format": "tsv", "limit": "0"}
        budget = self.settings.ena_timeout + (expected or 0) / self.settings.ena_min_rows_per_second
        show = sys.stdout.isatty() if progress is None else progress

        def receive() -> int:
            response = self._call("POST", url, taxon, data=data, stream=True)
            try:
                self._refuse(response, taxon)
                answer = Answer(fields, query, taxon, response.url)
                return answer.save(response, dest, self.clock() + budget, self.clock,
                                   Progress(show, expected))
            finally:
                response.close()

        try:
            return self.policy.call(receive, sleep=self.sleep, clock=self.clock)
        except GaveUp as exc:
            raise EnaError(f"ENA's answer to {query!r} broke off ({exc.__cause__}); it is "
                           "tried again at the taxon's next turn", taxon=taxon,
                           url=url) from None

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


class Progress:
    """A bar of runs against a known total, with rate and ETA (tqdm, on stderr), shown only
    when asked to (the CLI asks when stdout is a terminal)."""

    def __init__(self, show: bool, total: int | None, what: str = "receiving from ENA") -> None:
        self.bar: Any = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=" runs", unit_scale=True, mininterval=0.5,
                            desc=what, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Answer:
    """One search answer checked as it streams to disk: an HTML page, a header without the
    requested fields, bytes that are not UTF-8, a last row cut short and an answer slower than
    its deadline are each an :class:`EnaError`, never data."""

    def __init__(self, fields: Sequence[str], query: str, taxon: int | None, url: str) -> None:
        self.fields, self.query, self.taxon, self.url = fields, query, taxon, url
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.head = b""  # bytes until the header line is complete
        self.received = 0

    def save(self, response: requests.Response, dest: Path, deadline: float,
             clock: Callable[[], float], progress: Progress) -> int:
        """Write the body to ``dest``; returns its data rows."""
        if response.status_code == 204:
            dest.write_text("")
            return 0
        rows, last = 0, b"\n"
        try:
            with open(dest, "wb") as handle:
                for chunk in _chunks(response):
                    self._check(chunk)
                    handle.write(chunk)
                    lines = chunk.count(b"\n")
                    rows, last = rows + lines, chunk[-1:]
                    progress.update(lines)
                    if clock() > deadline:
                        raise self._error(f"took longer than its deadline ({self.received} "
                                          "bytes so far, too slow for its size)")
        finally:
            progress.close()
        try:
            self.decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self._error("ends inside a UTF-8 character: it was cut short") from None
        if self.received and last != b"\n":
            raise self._error("ends mid-row: it was cut short")
        return max(rows - 1, 0)  # the header row is not a run

    def _check(self, chunk: bytes) -> None:
        try:
            self.decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise self._error(f"is not UTF-8 (byte {self.received + exc.start}: "
                              f"{chunk[exc.start:exc.start + 4]!r})") from None
        if b"\n" not in self.head:
            self.head += chunk[:MAX_HEADER]
            if self.head.lstrip().startswith(b"<"):
                raise EnaError(f"ENA answered {self.url} with an HTML page, not TSV; it is "
                               "tried again at the taxon's next turn", taxon=self.taxon,
                               url=self.url)
            if b"\n" in self.head:
                self._header_line()
            elif len(self.head) > MAX_HEADER:
                raise self._error(f"has no header line in its first {MAX_HEADER} bytes")
        self.received += len(chunk)

    def _header_line(self) -> None:
        line = self.head.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
        header = line.split("\t")
        missing = [f for f in self.fields if f not in header]
        if missing:
            raise EnaError(f"ENA's answer lacks the requested field(s) {', '.join(missing)}",
                           taxon=self.taxon, url=self.url)

    def _error(self, what: str) -> EnaError:
        return EnaError(f"ENA's answer to {self.query!r} {what}; it is tried again at the "
                        "taxon's next turn", taxon=self.taxon, url=self.url)


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` returns what one read gives, so a slow answer is seen
    between reads (``iter_content`` would block until a whole megabyte had come)."""
    raw = response.raw
    while chunk := raw.read1(CHUNK, decode_content=True):
        yield chunk


def taxonomy_lookup(settings: Settings) -> Callable[[int], str]:
    """The look-up add_taxa uses: a name, UnknownToEna, or OperationError when unreachable."""
    # A person is waiting at the terminal: fail over to "added without a name" quickly.
    quick = settings.with_overrides(ena_retries=min(settings.ena_retries, 2),
                                    ena_timeout=min(settings.ena_timeout, 15.0))
    return EnaClient(quick, backoff=0.5).taxonomy_name
