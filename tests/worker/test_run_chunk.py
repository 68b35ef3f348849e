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

from .conftest import BIN, Fault, fastq_gz, md5

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
    assert not (worker / "out" / "ERR3" / "ERR3_2.fastq.gz").exists()
    for run in ("ERR1", "ERR2", "ERR4", "ERR5"):
        assert len(list((worker / "out" / run).glob("*.fastq.gz"))) == 2
    done = json.loads((worker / "out" / "DONE.json").read_text())
    assert done["status"] == "done"
    assert (done["runs_ok"], done["runs_failed"]) == (4, 1)
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
