"""The one attempt rule: which ways of giving a run back cost it an attempt.

A run is given back (to ``pending``) whenever a worker ends without having fetched it. Only a
cause that says something about the run itself counts an attempt:

- ``content``: the worker fetched it and it was wrong (MD5 or size mismatch, 404/410/403, FTP
  550) — counts;
- ``tried``: the worker tried it and crashed while doing so, again and again — counts;
- ``transient``: the host failed (network error, timeout, 5xx) even after the worker's
  backoff — never counts;
- ``not_tried``: the worker stopped, vanished or was rebooted before it got to the run —
  never counts;
- ``by_hand``: a person destroyed the worker — never counts.

After ``MICROFETCH_MAX_ATTEMPTS`` counted attempts the run is excluded as ``failed_attempts``.
ENA sometimes fixes a file, so after ``MICROFETCH_RETRY_FAILED_AFTER_HOURS`` such a run gets
another round, at most ``MICROFETCH_RETRY_FAILED_ROUNDS`` times; then it stays excluded with its
reason, so a file that is wrong at ENA cannot start billed workers forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from backend.state.accessions import Exclusion, Run, RunStatus
from backend.state.store import Database
from backend.timeutil import format_time, utc_now


class Cause(StrEnum):
    CONTENT = "content"
    TRIED = "tried"
    TRANSIENT = "transient"
    NOT_TRIED = "not_tried"
    BY_HAND = "by_hand"

    @property
    def counts(self) -> bool:
        return self in (Cause.CONTENT, Cause.TRIED)


def release(run: Run, cause: Cause, error: str, max_attempts: int) -> None:
    """Give a run back to pending; count an attempt when the cause says so."""
    run.last_error = error
    run.droplet_ip = ""
    run.status = RunStatus.PENDING
    if not cause.counts:
        return
    run.attempts += 1
    if run.attempts >= max_attempts:
        run.status = RunStatus.FAILED
        run.exclude(Exclusion.FAILED_ATTEMPTS, f"{run.attempts} attempts failed, last: {error}")
        run.given_up_at = utc_now()


def another_round(db: Database, taxon_id: int, now: datetime, after: timedelta,
                  rounds: int) -> int:
    """Runs given up on at least ``after`` ago, and given fewer than ``rounds`` extra rounds,
    back to pending with fresh attempts; returns how many (one indexed update)."""
    if rounds <= 0:
        return 0
    with db.write() as con:
        return con.execute(
            "UPDATE runs SET is_excluded = 0, exclusion_reason = '', status = 'pending', "
            "category = 'pending', attempts = 0, rounds = rounds + 1, given_up_at = '', "
            "last_error = 'another round after a cool-off; before: ' || exclusion_reason "
            "WHERE taxon = ? AND category = 'failed' AND rounds < ? AND given_up_at != '' "
            "AND given_up_at <= ?", (taxon_id, rounds, format_time(now - after))).rowcount
