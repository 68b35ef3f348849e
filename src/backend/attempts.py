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

After ``MICROFETCH_MAX_ATTEMPTS`` counted attempts the run is excluded as ``failed_attempts``,
so a file that is wrong at ENA cannot start billed workers forever.
"""

from __future__ import annotations

from enum import StrEnum

from backend.accessions import Exclusion, Run, RunStatus


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
