"""`microfetch serve`: the scheduler's jobs and the web server in one process.

The main thread only waits for a signal. SIGTERM or SIGINT sets the stop flag (steps check
it between units of work), stops the scheduler from starting new runs, gives running jobs
the grace period to finish, closes the web server and exits 0. After a SIGKILL, the next
start resumes from the registry and the worker records.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from backend.errors import OperationError
from backend.jobs.heartbeat import Jobs
from backend.preflight import preflight
from backend.settings import Settings
from backend.state.metrics import DaemonStatus, record_job
from backend.timeutil import utc_now


def guarded(name: str, step: Callable[[], str], status: DaemonStatus,
            every: int = 0) -> Callable[[], None]:
    """A scheduler job: run the step, log and count the outcome, never raise.

    An expected failure (an :class:`OperationError`: a service down, a transfer cut) is one
    line with the next try; anything else is a surprise and gets its traceback.
    """

    def job() -> None:
        started = time.monotonic()
        try:
            outcome = step()
        except OperationError as exc:
            logger.warning("job {} failed ({}); next run in {} s", name, exc, every)
            record_job(status, name, ok=False, detail=str(exc))
            return
        except Exception as exc:  # the scheduler must live on whatever a step does
            logger.opt(exception=exc).error("job {} failed unexpectedly: {}", name, exc)
            record_job(status, name, ok=False, detail=str(exc))
            return
        logger.info("job {}: {} ({:.1f} s)", name, outcome, time.monotonic() - started)
        record_job(status, name, ok=True, detail=outcome)

    return job


class Service:
    """The running daemon: scheduler, web server and the stop logic."""

    def __init__(self, settings: Settings, jobs: Jobs | None = None) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.settings = settings
        self.jobs = jobs or Jobs.build(settings)
        self.status = DaemonStatus(heartbeat_seconds=settings.heartbeat_seconds)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.server: Any = None
        self._stopped = threading.Event()

    def _add_jobs(self) -> None:
        specs = (
            ("heartbeat", self.jobs.heartbeat, self.settings.heartbeat_seconds),
            ("collector", self.jobs.collect, self.settings.collect_seconds),
            ("reconciler", self.jobs.reconcile, self.settings.reconcile_seconds),
        )
        for name, step, seconds in specs:
            self.scheduler.add_job(
                guarded(name, step, self.status, seconds), "interval", seconds=seconds, id=name,
                max_instances=1, coalesce=True, misfire_grace_time=max(seconds, 30),
                next_run_time=datetime.now(UTC),
            )

    def wake_collector(self, worker: str = "") -> None:
        """A callback arrived, or an admin asked (`POST /api/collect`): collect now instead of
        at the next interval."""
        job = self.scheduler.get_job("collector")
        if job is not None and not self.jobs.stop.is_set():
            job.modify(next_run_time=datetime.now(UTC))

    def start(self) -> None:
        from waitress.server import create_server

        from web import create_app

        app = create_app(self.settings, daemon=self.status, on_callback=self.wake_collector)
        host, _, port = self.settings.bind.rpartition(":")
        self.server = create_server(app, host=host.strip("[]"), port=int(port), threads=8)
        threading.Thread(target=self.server.run, name="web", daemon=True).start()
        self._add_jobs()
        self.scheduler.start()
        self.status.scheduler_running = True
        self.status.started_at = utc_now()
        logger.info("microfetch serving on http://{} with the {} backend",
                    self.settings.bind, self.settings.backend)

    def request_stop(self, *_: object) -> None:
        """Signal handler: only ask; the main thread does the stopping."""
        self.jobs.stop.set()
        self._stopped.set()

    def wait_and_stop(self) -> None:
        self._stopped.wait()
        logger.info("stopping: no new work; running jobs get {} s",
                    self.settings.shutdown_grace_seconds)
        self.status.stopping = True
        self.scheduler.pause()
        finisher = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True},
                                    daemon=True)
        finisher.start()
        finisher.join(self.settings.shutdown_grace_seconds)
        if finisher.is_alive():
            logger.warning("jobs still running after the grace period; the next start "
                           "resumes them from the registry")
        self.status.scheduler_running = False
        if self.server is not None:
            self.server.close()
        logger.info("stopped")


def serve(settings: Settings) -> int:
    preflight(settings)
    service = Service(settings)
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    service.start()
    service.wait_and_stop()
    return 0
