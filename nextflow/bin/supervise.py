#!/usr/bin/env python3
"""Keep one chunk runner alive in a worker folder, and say what state it is in.

Usage::

    supervise.py WORKER_DIR [--log FILE] [--max-restarts N] [--restart-backoff S]
                 [run_chunk.py options]
    supervise.py --status WORKER_DIR    # one JSON line: state, runner_id, detail
    supervise.py --stop WORKER_DIR      # stop the runner for good (no restart, no DONE.json)

The supervisor runs ``run_chunk.py`` and restarts it after a crash, with exponential backoff and
a bounded number of restarts, until ``out/DONE.json`` exists or a stop is requested. A restarted
runner resumes: the manifest keeps the finished runs and ``partial/`` the partial files.

One runner per folder: a second supervisor, or one started while a runner lives, refuses with
exit code 75. Runners are named by a per-worker id (folder, pid and process start time, checked
against ``/proc``), never by a bare pid. Standard library only, Python 3.9 or newer; Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fetch_run import utc_stamp
from runner_id import hold_lock, is_alive, read_pid_file, write_pid_file

EXIT_DONE = 0
EXIT_GAVE_UP = 3         # the runner kept crashing: state "crashed"
EXIT_BUSY = 75           # a runner already lives in this folder
MAX_RESTARTS = 5
RESTART_BACKOFF = 5.0    # first wait before a restart, s; doubles each time
MAX_BACKOFF = 300.0
STOP_GRACE_SECONDS = 90.0
SUPERVISOR, RUNNER = "supervise.py", "run_chunk.py"
STOP_FILE = "stop_requested"
STATE_FILE = "supervise.state"

STOP = threading.Event()


def log(message: str) -> None:
    """One line on stderr, stamped in UTC."""
    print(f"{utc_stamp()} supervise: {message}", file=sys.stderr, flush=True)


def save_state(worker: Path, state: str, detail: str, restarts: int) -> None:
    """The supervisor's last word, for ``--status`` after it is gone."""
    record = {"state": state, "detail": detail, "restarts": restarts, "updated_at": utc_stamp()}
    tmp = worker / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, worker / STATE_FILE)


def living_runner(worker: Path) -> dict[str, Any] | None:
    """The pid record of a supervisor or runner alive in ``worker``, if any."""
    for name, script in (("supervise.pid", SUPERVISOR), ("run_chunk.id", RUNNER)):
        record = read_pid_file(worker / name)
        if record and record.get("pid") != os.getpid() and is_alive(record, script):
            return record
    return None


def _done(worker: Path) -> bool:
    return (worker / "out" / "DONE.json").exists()


class Supervisor:
    """One worker folder's runner: started, restarted on a crash, stopped on request."""

    def __init__(self, worker: Path, runner_args: list[str], max_restarts: int,
                 backoff: float) -> None:
        self.worker, self.runner_args = worker, runner_args
        self.max_restarts, self.backoff = max_restarts, backoff
        self.child: subprocess.Popen[bytes] | None = None

    def request_stop(self, *_: object) -> None:
        """The SIGTERM handler: stop, and pass the stop on to the runner."""
        STOP.set()
        child = self.child
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the runner stops without writing DONE.json

    def run(self) -> int:
        """Supervise the folder's runner; refuses when one already lives."""
        lock = hold_lock(self.worker / "supervise.lock")
        other = living_runner(self.worker)
        if lock is None or other:
            who = other["runner_id"] if other else "another supervisor"
            log(f"a runner already lives in {self.worker} ({who}): not starting a second one")
            return EXIT_BUSY
        write_pid_file(self.worker / "supervise.pid", self.worker)
        if (self.worker / STOP_FILE).exists():
            save_state(self.worker, "stopped", "a stop was requested before this start", 0)
            return EXIT_DONE
        if _done(self.worker):
            save_state(self.worker, "done", "out/DONE.json written", 0)
            return EXIT_DONE
        return self._loop()

    def _loop(self) -> int:
        code, restarts = 0, 0
        for restarts in range(self.max_restarts + 1):
            if restarts:
                wait = min(self.backoff * 2 ** (restarts - 1), MAX_BACKOFF)
                log(f"runner exited with {code}; restart {restarts}/{self.max_restarts} "
                    f"in {wait:g} s")
                if STOP.wait(wait):
                    break
            if not (self.worker / "chunk.tsv").exists():
                log(f"{self.worker} was removed: nothing left to run")
                return EXIT_DONE
            save_state(self.worker, "running", f"runner start {restarts + 1}", restarts)
            code = self._run_once()
            if _done(self.worker) or STOP.is_set():
                break
        if _done(self.worker):
            save_state(self.worker, "done", "out/DONE.json written", restarts)
            return EXIT_DONE
        if STOP.is_set():
            save_state(self.worker, "stopped", "stopped on request", restarts)
            return EXIT_DONE
        detail = f"the runner exited with {code} {restarts + 1} times; gave up"
        save_state(self.worker, "crashed", detail, restarts)
        log(detail)
        return EXIT_GAVE_UP

    def _run_once(self) -> int:
        argv = [sys.executable, str(Path(__file__).resolve().parent / RUNNER),
                str(self.worker), *self.runner_args]
        self.child = subprocess.Popen(argv, cwd=self.worker, stdin=subprocess.DEVNULL)
        if STOP.is_set():  # a stop that came while starting: pass it on
            self.child.send_signal(signal.SIGTERM)
        try:
            return self.child.wait(timeout=None if not STOP.is_set() else STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait()


def status(worker: Path) -> dict[str, Any]:
    """The worker's state as home sees it: running, done, bad_summary (DONE.json unreadable),
    stopped (for good, by --stop), crashed (kept crashing: the supervisor gave up), dead (killed
    from outside or the host went down) or absent (never started)."""
    known = read_pid_file(worker / "supervise.pid") or read_pid_file(worker / "run_chunk.id")
    runner = known["runner_id"] if known else None
    if not worker.is_dir():
        return {"state": "absent", "runner_id": None, "detail": f"no folder {worker}"}
    done = worker / "out" / "DONE.json"
    if done.exists():
        try:
            summary = json.loads(done.read_text())
        except (OSError, ValueError) as exc:
            return {"state": "bad_summary", "runner_id": runner,
                    "detail": f"out/DONE.json is not JSON: {exc}"}
        return {"state": "done", "runner_id": runner, "detail": summary}
    alive = living_runner(worker)
    if alive:
        return {"state": "running", "runner_id": alive["runner_id"], "detail": _saved(worker)}
    saved = _read_state(worker)
    if saved.get("state") in ("stopped", "crashed"):
        return {"state": saved["state"], "runner_id": runner, "detail": saved.get("detail")}
    if known:  # not a crash it gave up on: killed from outside, or the host went down
        return {"state": "dead", "runner_id": runner,
                "detail": "the runner died without finishing (killed, or the host rebooted)"}
    return {"state": "absent", "runner_id": None, "detail": "no runner was started here"}


def _read_state(worker: Path) -> dict[str, Any]:
    try:
        record = json.loads((worker / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _saved(worker: Path) -> str:
    return str(_read_state(worker).get("detail") or "")


def stop(worker: Path, kill_after: float | None = None) -> dict[str, Any]:
    """Stop the living runner for good; a later start will not run it again.

    SIGTERM (the runner stops cleanly, keeping its partial files); with ``kill_after``, what
    still lives that many seconds later gets SIGKILL, its process group too when it leads one.
    """
    if worker.is_dir():
        (worker / STOP_FILE).write_text(utc_stamp() + "\n")
    alive = living_runner(worker)
    if alive:
        os.kill(int(alive["pid"]), signal.SIGTERM)  # checked against /proc just above
    if alive and kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline and living_runner(worker):
            time.sleep(0.1)
        _kill_what_lives(worker)
    return {"stopped": alive["runner_id"] if alive else None}


def _kill_what_lives(worker: Path) -> None:
    for _ in range(10):  # bounded: a supervisor, a runner, and nothing else lives here
        alive = living_runner(worker)
        if not alive:
            return
        pid = int(alive["pid"])
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.1)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Keep one chunk runner alive in a worker.")
    parser.add_argument("worker", type=Path, help="the worker folder (holds chunk.tsv)")
    parser.add_argument("--status", action="store_true", help="print the state as JSON")
    parser.add_argument("--stop", action="store_true", help="stop the runner for good")
    parser.add_argument("--kill-after", type=float, default=None, metavar="S",
                        help="with --stop: SIGKILL what still lives after S seconds")
    parser.add_argument("--log", type=Path, default=None,
                        help="append the supervisor's and the runner's output to this file")
    parser.add_argument("--max-restarts", type=int, default=MAX_RESTARTS,
                        help=f"restarts after crashes before giving up ({MAX_RESTARTS})")
    parser.add_argument("--restart-backoff", type=float, default=RESTART_BACKOFF,
                        help=f"first wait before a restart, s ({RESTART_BACKOFF:g})")
    return parser.parse_known_args(argv)


def _log_to(path: Path) -> None:
    """Send this process's output, and so its runner's, to ``path`` (appended)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """The command line: supervise, or print the status, or stop."""
    args, runner_args = _parse(sys.argv[1:] if argv is None else argv)
    worker = args.worker.resolve()
    if args.status:
        print(json.dumps(status(worker)))
        return 0
    if args.stop:
        print(json.dumps(stop(worker, args.kill_after)))
        return 0
    if not (worker / "chunk.tsv").exists():
        log(f"{worker} holds no chunk.tsv: nothing to run")
        return 2
    if args.log:
        _log_to(args.log)
    supervisor = Supervisor(worker, runner_args, max(0, args.max_restarts),
                            args.restart_backoff)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
