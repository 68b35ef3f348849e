"""The supervised runner: a killed runner is restarted and resumes; one runner per folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import BIN, Fault
from .test_run_chunk import make_worker, manifest

WAIT_SECONDS = 60


def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll until ``condition`` holds; a bound, not a timed assertion."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {WAIT_SECONDS} s")
        time.sleep(0.05)


def supervise(worker: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start the supervisor in its own session, as home does (setsid)."""
    folder = worker.relative_to(cwd) if cwd else worker
    return subprocess.Popen(
        [sys.executable, str(BIN / "supervise.py"), str(folder), "--restart-backoff", "0.1",
         "--timeout", "30", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        cwd=cwd)


def status(worker: Path) -> dict:
    out = subprocess.run([sys.executable, str(BIN / "supervise.py"), "--status", str(worker)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    (line,) = out.splitlines()
    return json.loads(line)


def part_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def runner_pid(worker: Path) -> int:
    try:
        return json.loads((worker / "run_chunk.id").read_text())["pid"]
    except (OSError, ValueError):
        return 0


def test_a_killed_runner_keeps_its_verified_runs_and_its_restart_resumes_the_partial_file(
        tmp_path, file_server):
    runs = {"ERR1": ["ERR1_1.fastq.gz"], "ERR2": ["ERR2_1.fastq.gz"],
            "ERR3": ["ERR3_1.fastq.gz"]}
    worker = make_worker(tmp_path, file_server, runs, reads={"ERR3_1.fastq.gz": 30000})
    big = file_server.files["/vol1/ERR3/ERR3_1.fastq.gz"]
    held = 20000
    file_server.faults["/vol1/ERR3/ERR3_1.fastq.gz"] = Fault("hold", after=held)
    part = worker / "partial" / "ERR3" / "ERR3_1.fastq.gz.part"

    proc = supervise(worker, "--max-parallel", "1")
    wait_for(lambda: part_size(part) == held, "the partial file of ERR3")
    first = runner_pid(worker)

    # The runs verified before the kill are in the manifest; the one in flight is not.
    assert [(r["run"], r["status"]) for r in manifest(worker)] == [("ERR1", "ok"),
                                                                    ("ERR2", "ok")]
    os.kill(first, signal.SIGKILL)
    _, err = proc.communicate(timeout=WAIT_SECONDS)

    assert proc.returncode == 0, err
    assert "runner exited with -9; restart 1/5" in err
    assert runner_pid(worker) != first
    requests = [r for r in file_server.requests if r["path"] == "/vol1/ERR3/ERR3_1.fastq.gz"]
    assert [r["range"] for r in requests] == [None, f"bytes={held}-"]
    assert requests[1]["sent"] == len(big) - held  # nothing received was fetched again
    for run in ("ERR1", "ERR2"):  # finished runs are not fetched again after the restart
        assert sum(r["path"] == f"/vol1/{run}/{run}_1.fastq.gz"
                   for r in file_server.requests) == 1
    assert (worker / "out" / "ERR3" / "ERR3_1.fastq.gz").read_bytes() == big
    assert not (worker / "partial" / "ERR3").exists()
    assert [r["status"] for r in manifest(worker)] == ["ok", "ok", "ok"]
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert (done["runs_ok"], done["runs_failed"], done["runs_transient"]) == (3, 0, 0)
    assert status(worker)["state"] == "done"


def test_a_second_start_refuses_while_a_runner_lives_and_a_stop_is_for_good(tmp_path,
                                                                           file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]})
    file_server.faults["/vol1/ERR1/ERR1_1.fastq.gz"] = Fault("hold", after=100)
    first = supervise(worker, cwd=tmp_path)  # a relative path names the same folder
    wait_for(lambda: file_server.requests, "the first request")
    state = status(worker)
    record = json.loads((worker / "supervise.pid").read_text())
    assert state["state"] == "running"
    assert state["runner_id"] == f"{worker.name}:{record['pid']}:{record['start_time']}"
    # the bare pid older homes signal as a group is the supervisor's: it leads the session
    assert int((worker / "run_chunk.pid").read_text()) == first.pid == record["pid"]

    second = supervise(worker)
    _, err = second.communicate(timeout=WAIT_SECONDS)
    assert second.returncode == 75
    assert "a runner already lives in" in err and state["runner_id"] in err
    # run_chunk.py itself refuses too, should anything start it beside the supervisor
    direct = subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker)],
                            capture_output=True, text=True, timeout=WAIT_SECONDS)
    assert direct.returncode == 75 and "another runner is working" in direct.stderr

    subprocess.run([sys.executable, str(BIN / "supervise.py"), "--stop", str(worker)],
                   check=True, capture_output=True, timeout=30)
    file_server.release.set()
    first.communicate(timeout=WAIT_SECONDS)
    assert first.returncode == 0
    assert status(worker)["state"] == "stopped"
    assert not (worker / "out" / "DONE.json").exists()

    again = supervise(worker)
    again.communicate(timeout=WAIT_SECONDS)
    assert again.returncode == 0
    assert len(file_server.requests) == 1  # a stopped worker is not started again


def test_a_runner_that_keeps_crashing_is_given_up_after_bounded_restarts(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]})
    (worker / "out").write_text("a file where the runner needs a folder\n")
    proc = supervise(worker, "--max-restarts", "2")
    _, err = proc.communicate(timeout=WAIT_SECONDS)
    assert proc.returncode == 3
    assert err.count("FileExistsError") == 3
    state = status(worker)
    assert state["state"] == "crashed"
    assert state["detail"] == "the runner exited with 1 3 times; gave up"


def test_a_pid_file_naming_another_process_is_not_taken_for_a_living_runner(tmp_path):
    worker = tmp_path / "mf-562-0-abc123"
    assert status(worker) == {"state": "absent", "runner_id": None,
                              "detail": f"no folder {worker}"}
    worker.mkdir()
    (worker / "chunk.tsv").write_text("run_accession\turls\tmd5s\tbytes\n")
    assert status(worker)["state"] == "absent"
    # This test's own process is alive but is no runner of this folder: a reused pid.
    sys.path.insert(0, str(BIN))
    from runner_id import start_time
    me = os.getpid()
    record = {"pid": me, "start_time": start_time(me), "worker": str(worker),
              "runner_id": f"{worker.name}:{me}:{start_time(me)}"}
    (worker / "supervise.pid").write_text(json.dumps(record))
    state = status(worker)
    assert state["state"] == "dead"
    assert state["runner_id"] == record["runner_id"]
    assert "died without finishing" in state["detail"]


def test_a_done_json_that_is_not_json_is_reported_with_the_reason(tmp_path):
    worker = tmp_path / "mf-562-0-abc123"
    (worker / "out").mkdir(parents=True)
    (worker / "out" / "DONE.json").write_text("{not json")
    state = status(worker)
    assert state["state"] == "bad_summary"
    assert state["detail"].startswith("out/DONE.json is not JSON")


UNIT = BIN.parent / "microfetch-worker@.service"


def test_the_systemd_unit_verifies_and_runs_the_supervisor_of_the_instance_folder(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install Debian's systemd for systemd-analyze")
        pytest.skip("systemd-analyze is not installed")
    shutil.copy(UNIT, tmp_path / UNIT.name)
    instance = "microfetch-worker@mf-562-0-abc123.service"
    result = subprocess.run([analyze, "verify", "--man=no", instance], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no unknown key, no bad value: systemd warns and goes on
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/usr/bin/python3 \$\{MICROFETCH_WORKERS_DIR\}/%i/nextflow/bin/"
                     r"supervise\.py \$\{MICROFETCH_WORKERS_DIR\}/%i ", text, re.M)
    assert "Restart=on-failure" in text
    assert "RestartPreventExitStatus=3 75" in text  # the supervisor's final exit codes


def test_systemd_analyze_catches_a_broken_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must install Debian's systemd for systemd-analyze")
        pytest.skip("systemd-analyze is not installed")
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes")
    (tmp_path / UNIT.name).write_text(broken)
    result = subprocess.run([analyze, "verify", "--man=no",
                             "microfetch-worker@mf-562-0-abc123.service"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert "restart specifier" in result.stderr  # so the check above can fail
