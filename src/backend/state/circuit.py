"""The health of the services microfetch depends on, as circuits kept in the state database.

Two circuits: ``ena`` (the Portal API, opened by the heartbeat when a check fails and ENA does
not answer) and ``file_host`` (where workers download from, opened when a worker's runs all
failed for transient causes). A circuit is ``closed`` (all well), ``open`` (paused until
``next_try``, the pause doubling with each failure up to a cap) or ``half-open`` (one probe has
been let through; its outcome closes or re-opens the circuit). The state lives in SQLite so the
daemon, cron ``tick`` runs and the web app all see, and obey, the same one.

What the web app calls: :func:`circuit_status` (dashboard), :func:`health_fields` (``/healthz``)
and :class:`CircuitCollector` (``/metrics``); the dispatcher calls :func:`dispatch_paused`, the
collector :func:`record_file_host`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from backend.state.store import Database, database_of
from backend.timeutil import format_time, parse_time, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS circuits (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since TEXT NOT NULL,        -- when the current state began
    failures INTEGER NOT NULL,  -- failures in a row; 0 when closed
    next_try TEXT NOT NULL,     -- when an open circuit lets a probe through
    last_error TEXT NOT NULL
)
"""
#: Doubling stops here: 2**30 times any base is beyond every cap a setting allows.
MAX_DOUBLINGS = 30
#: Error texts are kept for people; a whole HTML page from a proxy is not.
MAX_ERROR_CHARS = 500


class Service(StrEnum):
    ENA = "ena"
    FILE_HOST = "file_host"

    @property
    def label(self) -> str:
        return "ENA's portal" if self is Service.ENA else "the file host"


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Circuit:
    """One service's health as stored."""

    service: Service
    state: State = State.CLOSED
    since: datetime | None = None
    failures: int = 0
    next_try: datetime | None = None
    last_error: str = ""

    def paused(self, now: datetime) -> bool:
        """Work that needs the service waits: open (or probing) and the next try not yet due."""
        return self.state is not State.CLOSED and self.next_try is not None \
            and now < self.next_try

    def summary(self, now: datetime) -> str:
        """One line for people: what is wrong since when, and when it is tried next."""
        if self.state is State.CLOSED:
            return f"{self.service.label} is reachable"
        when = format_time(self.next_try) if self.paused(now) else "now"
        return (f"{self.service.label} unreachable since {format_time(self.since)} "
                f"({self.failures} failed tries); next try {when}")

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {"state": self.state.value, "since": format_time(self.since),
                "failures": self.failures, "next_try": format_time(self.next_try),
                "last_error": self.last_error, "paused": self.paused(now),
                "summary": self.summary(now)}


def backoff(failures: int, base: float, cap: float) -> timedelta:
    """The pause after ``failures`` failures in a row: base, 2x, 4x ... at most ``cap``."""
    doublings = min(max(failures - 1, 0), MAX_DOUBLINGS)
    return timedelta(seconds=min(max(cap, base), base * 2 ** doublings))


# The database -------------------------------------------------------------------------------

def read(database: Database, service: Service) -> Circuit:
    rows = database.ensure(SCHEMA).query("SELECT * FROM circuits WHERE name = ?", (service.value,))
    return _from_row(service, rows[0]) if rows else Circuit(service)


def _from_row(service: Service, row: Any) -> Circuit:
    return Circuit(service, State(row["state"]), parse_time(row["since"]), int(row["failures"]),
                   parse_time(row["next_try"]), row["last_error"])


def _store(con: Any, circuit: Circuit) -> None:
    con.execute(
        "INSERT INTO circuits (name, state, since, failures, next_try, last_error) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET state = excluded.state, "
        "since = excluded.since, failures = excluded.failures, next_try = excluded.next_try, "
        "last_error = excluded.last_error",
        (circuit.service.value, circuit.state.value, format_time(circuit.since),
         circuit.failures, format_time(circuit.next_try), circuit.last_error))


def record_failure(database: Database, service: Service, error: str, now: datetime,
                   base: float, cap: float) -> Circuit:
    """The service failed: open the circuit (or keep it open) with a longer pause."""
    with database.ensure(SCHEMA).write() as con:
        old = _current(con, service)
        failures = old.failures + 1
        since = old.since if old.state is not State.CLOSED and old.since else now
        new = Circuit(service, State.OPEN, since, failures, now + backoff(failures, base, cap),
                      error.strip()[:MAX_ERROR_CHARS])
        _store(con, new)
    return new


def record_success(database: Database, service: Service, now: datetime) -> Circuit:
    """The service answered: close the circuit; returns the state it had before."""
    if read(database, service).state is State.CLOSED:
        return Circuit(service)  # the usual case costs a read, not a write transaction
    with database.ensure(SCHEMA).write() as con:
        old = _current(con, service)
        if old.state is not State.CLOSED:
            _store(con, Circuit(service, State.CLOSED, now, 0, None, ""))
    return old


def claim_probe(database: Database, service: Service, now: datetime, base: float,
                cap: float) -> bool:
    """Let one probe through an open circuit whose next try is due; False if not due or taken.

    The claim is a conditional update, so of two processes asking at once one gets it; the
    next try moves on meanwhile, so a probe lost with its process is tried again later.
    """
    if read(database, service).state is State.CLOSED:
        return True
    with database.ensure(SCHEMA).write() as con:
        old = _current(con, service)
        if old.state is State.CLOSED:
            return True
        if old.paused(now):
            return False
        _store(con, Circuit(service, State.HALF_OPEN, old.since, old.failures,
                            now + backoff(old.failures, base, cap), old.last_error))
    return True


def _current(con: Any, service: Service) -> Circuit:
    row = con.execute("SELECT * FROM circuits WHERE name = ?", (service.value,)).fetchone()
    return _from_row(service, row) if row else Circuit(service)


# What the daemon calls ------------------------------------------------------------------------


def ena_failed(settings: Any, error: str, now: datetime) -> Circuit:
    """ENA's portal did not answer: pause the checks of every taxon."""
    return record_failure(database_of(settings), Service.ENA, error, now,
                          settings.outage_backoff_seconds, settings.outage_backoff_max_seconds)


def ena_answered(settings: Any, now: datetime) -> Circuit:
    """ENA's portal answered; returns the state before (to tell people it came back)."""
    return record_success(database_of(settings), Service.ENA, now)


def checks_paused(settings: Any, now: datetime) -> str | None:
    """Why checks wait now, or None when a check may run (possibly as the probe)."""
    circuit = read(database_of(settings), Service.ENA)
    return circuit.summary(now) if circuit.paused(now) else None


def claim_check(settings: Any, now: datetime) -> bool:
    """Take the right to check now (always, when ENA's circuit is closed)."""
    return claim_probe(database_of(settings), Service.ENA, now,
                       settings.outage_backoff_seconds, settings.outage_backoff_max_seconds)


def record_file_host(settings: Any, transient: int, ok: int,
                     now: datetime | None = None) -> Circuit:
    """A worker's report: its runs all failed transiently opens the file-host circuit.

    Any run fetched closes it; a worker whose failures were all content causes (wrong MD5,
    404) says nothing about the host's reachability and leaves it as it is.
    """
    now = now or utc_now()
    database = database_of(settings)
    if ok > 0:
        record_success(database, Service.FILE_HOST, now)
    elif transient > 0:
        record_failure(database, Service.FILE_HOST,
                       f"a worker's {transient} runs all failed for transient causes "
                       "(network errors, timeouts or 5xx)", now,
                       settings.outage_backoff_seconds, settings.outage_backoff_max_seconds)
    return read(database, Service.FILE_HOST)


def file_host_paused(settings: Any, now: datetime) -> bool:
    """Is dispatch paused now? A read only: the heartbeat's "is dispatch due?" question."""
    return read(database_of(settings), Service.FILE_HOST).paused(now)


def dispatch_paused(settings: Any, now: datetime | None = None) -> str | None:
    """Why no worker is started now, or None: when the pause is over one worker goes as probe.

    Call it once per dispatch pass, before starting workers: a None after an outage claims the
    probe, and the circuit stays paused for other passes until that worker reports.
    """
    now = now or utc_now()
    database = database_of(settings)
    circuit = read(database, Service.FILE_HOST)
    if circuit.state is State.CLOSED:
        return None
    if claim_probe(database, Service.FILE_HOST, now, settings.outage_backoff_seconds,
                   settings.outage_backoff_max_seconds):
        return None
    return "dispatch paused: " + read(database, Service.FILE_HOST).summary(now)


# What the web app calls -----------------------------------------------------------------------


def circuits(settings: Any) -> list[Circuit]:
    database = database_of(settings)
    return [read(database, service) for service in Service]


def circuit_status(settings: Any, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Every circuit as JSON, by service (``ena``, ``file_host``): for the dashboard and API."""
    now = now or utc_now()
    return {c.service.value: c.to_json(now) for c in circuits(settings)}


def health_fields(settings: Any, now: datetime | None = None) -> dict[str, Any]:
    """Fields to merge into ``/healthz``'s body. An outage is shown, not counted a problem:
    the daemon is healthy while it waits for ENA, and a restart would not help.
    """
    return {"services": circuit_status(settings, now)}


class CircuitCollector(Collector):
    """Gauges for ``/metrics``, read from the database at scrape time."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily("microfetch_service_state",
                                  "1 for the state a service's circuit is in, by service.",
                                  labels=["service", "state"])
        failures = GaugeMetricFamily("microfetch_service_failures",
                                     "Failed tries in a row of a service.", labels=["service"])
        next_try = GaugeMetricFamily("microfetch_service_next_try_timestamp_seconds",
                                     "When a paused service is tried next (0 when closed).",
                                     labels=["service"])
        for circuit in circuits(self.settings):
            name = circuit.service.value
            for option in State:
                state.add_metric([name, option.value], 1.0 if circuit.state is option else 0.0)
            failures.add_metric([name], float(circuit.failures))
            next_try.add_metric([name], circuit.next_try.timestamp() if circuit.next_try
                                else 0.0)
        yield from (state, failures, next_try)
