"""The one retry policy for outbound HTTP (ENA, DigitalOcean's API) and SSH connections.

What is retried, and nothing else:

- HTTP: a dropped or refused connection, a timeout, a body broken off, and the answers
  429, 500, 502, 503 and 504. Every other status (a 4xx above all) is the caller's to handle.
- SSH: a refused, reset or unreachable connection, a timeout, a connection closed during the
  handshake and a missing or late protocol banner or handshake (a host still booting). Never an
  authentication failure or a host-key mismatch: trying again cannot fix either.

How long to wait between tries:

- An exponential backoff: ``base``, then doubling, never more than ``max_backoff``, with an
  optional random ``jitter`` (a fraction of the backoff added on top).
- An answer that says how long to wait overrides the backoff: ``Retry-After`` (seconds or an
  HTTP date) on any retried answer, DigitalOcean's ``ratelimit-reset`` (a unix time) on a 429.
  The wait it asks for is validated and bounded: a time already past waits 0, anything longer
  than ``max_wait`` waits ``max_wait``, and a value that cannot be read (not a number or a
  date, NaN, infinite) waits a bounded guess, a quarter of ``max_wait``: the server asked for
  a pause without saying how long.

How many tries: ``attempts`` in all (the first one included), and, when ``deadline`` is set,
no wait that would end after ``deadline`` seconds since the first try. Then :class:`GaveUp`.

This is a core module: it imports nothing from the state, ENA or compute layers.
"""

from __future__ import annotations

import errno
import math
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests
import urllib3

T = TypeVar("T")

#: Answers worth another try: rate limited, or a server's passing trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest wait an answer may ask for, and the longest backoff.
MAX_WAIT = 120.0
#: Errors of a request or its body that another try may not meet.
TRANSIENT_HTTP_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)
#: Socket errors of a host that is not reachable yet (booting, its address not yet routed).
TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                              errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                              errno.ETIMEDOUT})


class GaveUp(Exception):
    """Every try failed with something worth retrying; ``last`` says what, for messages."""

    def __init__(self, last: str, tries: int, seconds: float) -> None:
        super().__init__(f"gave up after {tries} tries in {seconds:.0f} s ({last})")
        self.last, self.tries, self.seconds = last, tries, seconds


class RetryableAnswer(Exception):
    """An HTTP answer worth another try (429, 5xx); the answer itself is closed.

    ``wait`` is what its headers asked for (already bounded), None when they asked nothing.
    """

    def __init__(self, response: requests.Response, wait: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status, self.wait, self.url = response.status_code, wait, response.url


def describe(exc: BaseException) -> str:
    """What went wrong, for a message: ``HTTP 503`` or ``ConnectTimeout: ...``."""
    if isinstance(exc, RetryableAnswer):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# What is retried --------------------------------------------------------------------------


def transient_http(exc: BaseException) -> bool:
    """A failed request worth another try: a retryable answer or a network error."""
    return isinstance(exc, (RetryableAnswer, *TRANSIENT_HTTP_ERRORS))


def transient_ssh(exc: BaseException) -> bool:
    """A failed SSH connection worth another try (see the module's docstring)."""
    import paramiko  # here: importing this module must not load paramiko

    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        # Every address refused or failed: retried when each failure is transient.
        return all(transient_ssh(e) if isinstance(e, BaseException)
                   else True for e in exc.errors.values())
    if isinstance(exc, (ConnectionError, TimeoutError, EOFError)):
        return True  # refused, reset, aborted; socket.timeout; closed during the handshake
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # a name server that did not answer in time
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS
    if isinstance(exc, paramiko.SSHException):
        # "Error reading SSH protocol banner"; "No existing session" is the same host seen
        # from the other side: the handshake had not finished when the connect timeout ended.
        text = str(exc).lower()
        return "banner" in text or "no existing session" in text
    return False


# How long to wait -------------------------------------------------------------------------


def _seconds(text: str) -> float | None:
    """A finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def retry_after_seconds(text: str, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (epoch seconds): a number of seconds or an HTTP
    date. None when it is neither (or NaN or infinite). Not yet bounded: may be negative."""
    text = text.strip()
    seconds = _seconds(text)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; a naive one ("-0000") is read so
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() - now


def reset_seconds(text: str, now: float) -> float | None:
    """``ratelimit-reset`` (a unix time) as seconds from ``now``; None when unreadable."""
    value = _seconds(text.strip())
    return None if value is None else value - now


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried, how often, and how long to wait between tries."""

    #: Tries in all, the first one included; None: until ``deadline``.
    attempts: int | None
    #: The first backoff, in seconds; it doubles with each try.
    base: float = 1.0
    #: The longest backoff.
    max_backoff: float = MAX_WAIT
    #: The longest wait an answer's ``Retry-After`` / ``ratelimit-reset`` may ask for.
    max_wait: float = MAX_WAIT
    #: A random fraction of the backoff added on top (0 to 1); never added to a wait that
    #: an answer asked for.
    jitter: float = 0.0
    #: Seconds after the first try by which every wait must have ended; None: no deadline.
    deadline: float | None = None
    #: Which failures are worth another try.
    retry_on: Callable[[BaseException], bool] = field(default=transient_http, compare=False)
    #: HTTP answers worth another try.
    statuses: frozenset[int] = RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.attempts is None and self.deadline is None:
            raise ValueError("a retry policy needs attempts or a deadline (or both)")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if not (0 <= self.base <= self.max_backoff) or self.max_wait < 0:
            raise ValueError("0 <= base <= max_backoff and max_wait >= 0 are required")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, not {self.jitter}")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"deadline must not be negative, not {self.deadline}")

    # waits ----------------------------------------------------------------------------

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after failed try number ``attempt`` (0 for the first one)."""
        wait = min(self.base * 2 ** min(attempt, 64), self.max_backoff)
        return wait + wait * self.jitter * rand() if self.jitter else wait

    def bounded(self, seconds: float | None) -> float:
        """A wait an answer asked for, made safe: past is 0, too long is ``max_wait``, and
        unreadable (None) is a quarter of ``max_wait``."""
        if seconds is None:
            return self.max_wait / 4
        return min(max(seconds, 0.0), self.max_wait)

    def asked_wait(self, status: int, headers: Mapping[str, str], now: float) -> float | None:
        """The bounded wait an answer's headers ask for; None when they ask nothing.

        ``ratelimit-reset`` counts on a 429 only (DigitalOcean sends it on every answer);
        ``Retry-After`` counts on any retried answer. ``now`` is epoch seconds.
        """
        reset, after = headers.get("ratelimit-reset"), headers.get("Retry-After")
        if status == 429 and reset is not None:
            return self.bounded(reset_seconds(reset, now))
        if after is not None:
            return self.bounded(retry_after_seconds(after, now))
        return None

    def wait(self, attempt: int, asked: float | None = None) -> float:
        """What to wait after failed try ``attempt``: what the answer asked, else backoff."""
        return asked if asked is not None else self.backoff(attempt)

    # HTTP answers ---------------------------------------------------------------------

    def check(self, response: requests.Response, now: float | None = None) -> requests.Response:
        """The answer, or :class:`RetryableAnswer` (the answer closed) when it is worth
        another try. ``now`` (epoch seconds) reads ``ratelimit-reset`` and HTTP dates."""
        if response.status_code not in self.statuses:
            return response
        asked = self.asked_wait(response.status_code, response.headers,
                                time.time() if now is None else now)
        response.close()
        raise RetryableAnswer(response, asked)

    # the loop -------------------------------------------------------------------------

    def call(self, action: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> T:
        """``action()``, tried again after what :attr:`retry_on` accepts, waiting between
        tries; :class:`GaveUp` when the tries (or the deadline) run out. Anything else that
        ``action`` raises is raised at once."""
        started, attempt = clock(), 0
        while True:
            try:
                return action()
            except Exception as exc:
                if not self.retry_on(exc):
                    raise
                wait = self.wait(attempt, getattr(exc, "wait", None)
                                 if isinstance(exc, RetryableAnswer) else None)
                attempt += 1
                spent = clock() - started
                if (self.attempts is not None and attempt >= self.attempts) or (
                        self.deadline is not None and spent + wait > self.deadline):
                    raise GaveUp(describe(exc), attempt, spent) from exc
            sleep(wait)


def http_policy(retries: int, base: float = 1.0, **overrides: object) -> RetryPolicy:
    """The HTTP policy with ``retries`` tries after the first."""
    return RetryPolicy(attempts=retries + 1, base=base, **overrides)  # type: ignore[arg-type]


def ssh_policy(boot_seconds: float) -> RetryPolicy:
    """The SSH connection policy: short, growing waits while a host boots, for at most
    ``boot_seconds``; jittered, so workers booting together do not knock in step."""
    return RetryPolicy(attempts=None, base=0.5, max_backoff=10.0, jitter=0.2,
                       deadline=boot_seconds, retry_on=transient_ssh)
