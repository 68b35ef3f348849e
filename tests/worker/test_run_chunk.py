"""The chunk runner end to end: several runs, a failure, the manifest, DONE.json, the callback."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import BIN, Fault, fastq_gz, find_python, md5

PIPELINE = BIN.parent
TOKEN = "s3cret-token"


def make_worker(tmp_path: Path, file_server, runs: dict[str, list[str]], callback: str = "",
                name: str = "mf-562-0-abc123", reads: dict[str, int] | None = None) -> Path:
    """A worker folder whose chunk lists ``runs``, served by ``file_server``."""
    worker = tmp_path / name
    worker.mkdir()
    lines = ["run_accession\turls\tmd5s\tbytes"]
    for run, files in runs.items():
        datas = [fastq_gz(f, (reads or {}).get(f, 3000)) for f in files]
        urls = [file_server.add(f"vol1/{run}/{f}", d) for f, d in zip(files, datas, strict=True)]
        lines.append("\t".join([run, ";".join(urls), ";".join(md5(d) for d in datas),
                                ";".join(str(len(d)) for d in datas)]))
    (worker / "chunk.tsv").write_text("\n".join(lines) + "\n")
    (worker / "token").write_text(TOKEN)
    (worker / "callback_url").write_text(callback + "\n")
    return worker


def run_chunk(worker: Path, env: dict | None = None, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                           "--timeout", "2", "--retries", "1", *extra],
                          capture_output=True, text=True, timeout=120, env=env)


def manifest(worker: Path) -> list[dict[str, str]]:
    with open(worker / "out" / "manifest.tsv") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_a_chunk_of_several_runs_is_fetched_described_and_reported_home(
        tmp_path, file_server, callback_server):
    runs = {f"ERR{i}": [f"ERR{i}_1.fastq.gz", f"ERR{i}_2.fastq.gz"] for i in range(1, 6)}
    worker = make_worker(tmp_path, file_server, runs,
                         callback=f"http://127.0.0.1:{callback_server.port}")
    file_server.faults["/vol1/ERR3/ERR3_2.fastq.gz"] = Fault("corrupt", times=10)

    result = run_chunk(worker)

    assert result.returncode == 0, result.stderr
    rows = manifest(worker)
    assert len(rows) == 10
    bad = [r for r in rows if r["status"] != "ok"]
    assert [(r["run"], r["file"]) for r in bad] == [("ERR3", "ERR3_2.fastq.gz")]
    assert "MD5" in bad[0]["error"]
    assert bad[0]["cause"] == "content"  # a property of the file: home counts an attempt
    assert bad[0]["attempts"] == "2"  # the first try and one retry (--retries 1)
    assert not (worker / "out" / "ERR3" / "ERR3_2.fastq.gz").exists()
    for run in ("ERR1", "ERR2", "ERR4", "ERR5"):
        assert len(list((worker / "out" / run).glob("*.fastq.gz"))) == 2
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert done["status"] == "done"
    assert (done["runs_ok"], done["runs_failed"], done["runs_transient"]) == (4, 1, 0)
    assert done["bytes"] == sum(int(r["bytes"]) for r in rows if r["status"] == "ok")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", done["finished_at"])

    (call,) = callback_server.received
    assert call["path"] == f"/api/workers/{worker.name}/callback"
    assert call["auth"] == f"Bearer {TOKEN}"
    assert call["type"] == "application/json"
    assert call["json"] == done


def test_a_failed_callback_is_logged_and_done_json_still_stands(tmp_path, file_server,
                                                                callback_server):
    callback_server.status = 401
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]},
                         callback=f"http://127.0.0.1:{callback_server.port}")
    result = run_chunk(worker)
    assert result.returncode == 0
    assert "answered 401" in result.stderr
    assert len(callback_server.received) == 1  # a 4xx is not retried
    assert (worker / "out" / "DONE.json").exists()


def test_an_unreachable_callback_is_retried_with_a_bound(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]},
                         callback="http://127.0.0.1:9")
    code = ("import sys, run_chunk; run_chunk.CALLBACK_RETRIES = 2; "
            "import time; time.sleep = lambda s: None; "
            f"sys.exit(run_chunk.main([{str(worker)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(BIN)})
    assert result.returncode == 0
    assert result.stderr.count("failed:") == 3
    assert "callback gave up; DONE.json stands" in result.stderr


def test_an_unreadable_chunk_ends_with_a_failed_done_json(tmp_path):
    worker = tmp_path / "mf-1-0-aaaaaa"
    worker.mkdir()
    (worker / "chunk.tsv").write_text("not a chunk\n")
    result = run_chunk(worker)
    assert result.returncode == 1
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert done["status"] == "failed"
    assert "chunk.tsv header" in done["error"]


def test_sigterm_stops_the_runner_without_writing_done_json(tmp_path, file_server):
    runs = {f"ERR{i}": [f"ERR{i}_1.fastq.gz"] for i in range(1, 4)}
    worker = make_worker(tmp_path, file_server, runs)
    for i in range(1, 4):
        file_server.faults[f"/vol1/ERR{i}/ERR{i}_1.fastq.gz"] = Fault("stall", after=10,
                                                                       times=10)
    proc = subprocess.Popen([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                             "--timeout", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not file_server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert "stopped before finishing" in err
    assert not (worker / "out" / "DONE.json").exists()


def test_with_nextflow_on_path_the_runner_hands_the_chunk_to_the_pipeline(tmp_path,
                                                                         file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]})
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "nextflow-args.json"
    # A stand-in for Nextflow: records its arguments, then publishes like FETCH_RUN would.
    (fake / "nextflow").write_text(f"""#!{sys.executable}
import json, subprocess, sys
args = sys.argv[1:]
json.dump(args, open({str(record)!r}, "w"))
opt = dict(zip(args[::1], args[1::1]))
for line in open(opt["--chunk"]).read().splitlines()[1:]:
    run, urls, md5s, sizes = line.split("\\t")
    subprocess.run([sys.executable, {str(BIN / 'fetch_run.py')!r}, "--run", run, "--urls", urls,
                    "--md5s", md5s, "--bytes", sizes, "--outdir", opt["--outdir"] + "/" + run])
""")
    (fake / "nextflow").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}

    result = run_chunk(worker, env, "--max-parallel", "3")

    assert result.returncode == 0, result.stderr
    args = json.loads(record.read_text())
    assert args[:2] == ["run", str(worker / "nextflow" / "main.nf")]
    for option, value in (("--chunk", str(worker / "chunk.tsv")),
                          ("--outdir", str(worker / "out")), ("--max_parallel", "3")):
        assert args[args.index(option) + 1] == value
    assert [r["status"] for r in manifest(worker)] == ["ok", "ok"]
    assert json.loads((worker / "out" / "DONE.json").read_text())["runs_ok"] == 1


def test_the_manifest_has_its_documented_columns_and_one_row_per_file(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]})
    assert run_chunk(worker).returncode == 0
    header = (worker / "out" / "manifest.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["run", "file", "bytes", "md5", "status", "error", "cause", "attempts",
                      "finished_at"]
    rows = manifest(worker)
    assert [(r["file"], r["status"], r["cause"], r["attempts"]) for r in rows] == [
        ("ERR1_1.fastq.gz", "ok", "", "1"), ("ERR1_2.fastq.gz", "ok", "", "1")]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["finished_at"])


def test_a_host_answering_503_for_a_while_costs_nothing(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"],
                                                 "ERR2": ["ERR2_1.fastq.gz"]})
    file_server.faults["/vol1/ERR1/ERR1_1.fastq.gz"] = Fault("503", times=5)
    result = run_chunk(worker, None, "--backoff", "0.01", "--transient-budget", "60")
    assert result.returncode == 0, result.stderr
    rows = manifest(worker)
    assert [(r["run"], r["status"], r["error"]) for r in rows] == [("ERR1", "ok", ""),
                                                                  ("ERR2", "ok", "")]
    assert rows[0]["attempts"] == "6"  # five 503s waited out, then the file
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert (done["runs_ok"], done["runs_failed"], done["runs_transient"]) == (2, 0, 0)


def test_a_host_down_longer_than_the_budget_fails_the_run_as_transient(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"],
                                                 "ERR2": ["ERR2_1.fastq.gz"]})
    file_server.faults["/vol1/ERR1/ERR1_1.fastq.gz"] = Fault("503", times=10**6)
    result = run_chunk(worker, None, "--backoff", "0.05", "--transient-budget", "0.3")
    assert result.returncode == 0, result.stderr
    first, second = manifest(worker)
    assert (first["status"], first["cause"]) == ("failed", "transient")
    assert "HTTP 503" in first["error"] and "no progress for 0.3 s" in first["error"]
    assert second["status"] == "ok"
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert (done["runs_ok"], done["runs_failed"], done["runs_transient"]) == (1, 1, 1)


def test_a_file_gone_from_the_host_fails_at_once_as_content(tmp_path, file_server):
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]})
    file_server.faults["/vol1/ERR1/ERR1_1.fastq.gz"] = Fault("410", times=10)
    assert run_chunk(worker).returncode == 0
    (row,) = manifest(worker)
    assert (row["status"], row["cause"], row["attempts"]) == ("failed", "content", "1")
    assert "HTTP 410" in row["error"]


def test_the_worker_scripts_run_a_chunk_under_python_3_9(tmp_path, file_server):
    python = find_python(3, 9)
    if python is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must provide a Python 3.9 (pyenv or setup-python)")
        pytest.skip("no Python 3.9 on this machine")
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"],
                                                 "ERR2": ["ERR2_1.fastq.gz"]})
    file_server.faults["/vol1/ERR2/ERR2_1.fastq.gz"] = Fault("corrupt", times=10)
    # Through the supervisor, so that it, the runner and the fetcher all run on 3.9.
    result = subprocess.run([python, str(BIN / "supervise.py"), str(worker), "--timeout", "5",
                             "--retries", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [(r["run"], r["status"], r["cause"]) for r in manifest(worker)] == [
        ("ERR1", "ok", ""), ("ERR2", "failed", "content")]
    state = subprocess.run([python, str(BIN / "supervise.py"), "--status", str(worker)],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(state)["state"] == "done"
    preflight = subprocess.run([python, str(BIN / "preflight.py"), str(worker)],
                               capture_output=True, text=True, timeout=30)
    assert json.loads(preflight.stdout)["python"]["version"].startswith("3.9.")
