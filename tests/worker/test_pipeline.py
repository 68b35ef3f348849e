"""The Nextflow pipeline, checked without Nextflow: parsed by reftrace, its script run for real.

``reftrace`` (PyPI) parses ``main.nf`` and ``nextflow.config`` with a Nextflow grammar; the
process script block is rendered and run by ``nextflow_stub.py`` through ``run_chunk.py``'s
Nextflow path, and its manifest must be the embedded runner's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIN, Fault
from .nextflow_stub import params_block, process_script, render
from .test_run_chunk import make_worker, manifest
from .test_supervise import wait_for

try:
    import reftrace
except ImportError:  # the test extras install it; CI must not pass by skipping
    if os.environ.get("CI"):
        raise
    pytest.skip("reftrace is not installed (pip install reftrace)", allow_module_level=True)

PIPELINE = BIN.parent
MAIN_NF = (PIPELINE / "main.nf").read_text()
CONFIG = (PIPELINE / "nextflow.config").read_text()
DOCS = PIPELINE.parent / "docs" / "src" / "worker.md"
STUB = Path(__file__).with_name("nextflow_stub.py")
PROFILES = ("standard", "slurm", "awsbatch", "google-batch")


def test_main_nf_parses_as_current_dsl2_with_one_process_and_no_dynamic_directives():
    module = reftrace.Module.from_file(str(PIPELINE / "main.nf"))
    assert isinstance(module, reftrace.Module), module
    assert module.dsl_version == 2
    (process,) = module.processes
    assert process.name == "FETCH_RUN"
    # directives that follow the params are in nextflow.config, where a parser can check them
    assert not process.max_forks and not process.max_retries and not process.error_strategies
    assert "nextflow.enable.dsl" not in MAIN_NF
    assert not re.search(r"\bChannel\.", MAIN_NF)


def test_every_param_is_typed_with_a_default_that_the_config_and_readme_repeat():
    declared = params_block(MAIN_NF)
    assert set(declared) == {"chunk", "outdir", "partial_dir", "verdicts", "max_parallel",
                             "retries", "timeout", "transient_budget"}
    config = dict(re.findall(r"^    (\w+)\s+= (.+)$",
                             re.search(r"^params \{\n(.*?)^\}", CONFIG, re.S | re.M).group(1),
                             re.M))
    readme = (PIPELINE / "README.md").read_text()
    for name, (_kind, default) in declared.items():
        assert config[name].strip("'") == str(default), name  # the same type, too
        shown = config[name] if config[name] == "''" else config[name].strip("'")
        assert f"| `--{name}` | `{shown}` |" in readme, name


def test_run_chunk_passes_only_declared_params():
    sys.path.insert(0, str(BIN))
    from chunk_state import Options
    from nextflow_path import nextflow_argv

    argv = nextflow_argv(Path("/w/mf-1-0-aaaaaa"), Path("/w/chunk.tsv"), Options())
    given = {arg[2:] for arg in argv if arg.startswith("--")}
    assert given <= set(params_block(MAIN_NF))
    assert "-resume" in argv and argv[argv.index("-work-dir") + 1] == "/w/mf-1-0-aaaaaa/work"
    cloud = nextflow_argv(Path("/w/x"), Path("/w/chunk.tsv"), Options(profile="awsbatch"))
    assert "--partial_dir" in argv and "--partial_dir" not in cloud


def test_the_config_holds_the_directives_the_version_the_trace_and_the_profiles():
    result = reftrace.ConfigFile.from_file(str(PIPELINE / "nextflow.config"))
    assert result.error is None, result.error
    scopes = [named for scope in result.config_file.process_scopes
              for named in scope.named_scopes]
    (fetch,) = [s for s in scopes if s.name == "FETCH_RUN"]
    directives = {d.name: d.value for d in fetch.directives}
    assert directives["maxForks"].params == ["max_parallel"]
    assert directives["maxRetries"].params == ["retries"]
    assert directives["errorStrategy"].in_closure
    assert "nextflowVersion = '>=25.10.0'" in CONFIG
    assert re.search(r"executor \{\n\s+cpus = params\.max_parallel as Integer", CONFIG)
    assert re.search(r"trace \{\n\s+enabled\s+= true", CONFIG)
    docs = DOCS.read_text() + (PIPELINE / "README.md").read_text()
    for profile in PROFILES:
        assert re.search(rf"^    '?{profile}'? \{{", CONFIG, re.M), profile
        assert f"`{profile}`" in docs, profile


def test_the_script_block_renders_to_the_fetcher_command_line():
    statements, _ = process_script(MAIN_NF)
    params = {name: default for name, (_, default) in params_block(MAIN_NF).items()}
    inputs = {"run": "ERR1", "urls": "http://h/a", "md5s": "m", "bytes": "1"}
    local = render(MAIN_NF, inputs, {**params, "partial_dir": "/w/partial"})
    assert "fetch_run.py --run 'ERR1' --urls 'http://h/a'" in local
    assert "--partial-dir '/w/partial/ERR1'" in local and "--report 'ERR1.verdict.tsv'" in local
    assert "--timeout 60.0 --retries 3" in local
    assert "--partial-dir 'partial'" in render(MAIN_NF, inputs, params)
    assert len(statements) == 1


def nextflow_on_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "nextflow").write_text(f"#!{sys.executable}\nimport runpy\n"
                                   f"runpy.run_path({str(STUB)!r}, run_name='__main__')\n")
    (fake / "nextflow").chmod(0o755)
    record = tmp_path / "nextflow-call.json"
    return {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
            "FAKE_NF_RECORD": str(record)}, record


def with_pipeline(worker: Path) -> Path:
    """The pipeline files home ships into every worker folder."""
    (worker / "nextflow").mkdir()
    for name in ("main.nf", "nextflow.config"):
        shutil.copy(PIPELINE / name, worker / "nextflow" / name)
    shutil.copytree(BIN, worker / "nextflow" / "bin",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return worker


def run_chunk(worker: Path, env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker), "--timeout",
                           "5", "--retries", "1", "--backoff", "0.01"],
                          capture_output=True, text=True, timeout=120, env=env)


def comparable(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return [(r["run"], r["file"], r["bytes"], r["md5"], r["status"], r["cause"], r["attempts"],
             re.sub(r"\d+ attempts", "N attempts", r["error"])) for r in rows]


def test_the_pipeline_path_and_the_embedded_path_write_the_same_manifest(tmp_path,
                                                                         file_server):
    runs = {"ERR1": ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"], "ERR2": ["ERR2_1.fastq.gz"]}
    by_nextflow = with_pipeline(make_worker(tmp_path, file_server, runs, name="mf-1-0-aaaaaa"))
    embedded = make_worker(tmp_path, file_server, runs, name="mf-1-1-bbbbbb")
    env, record = nextflow_on_path(tmp_path)
    for worker, worker_env in ((by_nextflow, env), (embedded, None)):
        file_server.faults["/vol1/ERR2/ERR2_1.fastq.gz"] = Fault("corrupt", times=10)
        result = run_chunk(worker, worker_env)
        assert result.returncode == 0, result.stderr

    call = json.loads(record.read_text())
    assert call["syntax"] == "v2"
    assert comparable(manifest(by_nextflow)) == comparable(manifest(embedded))
    assert [r["cause"] for r in manifest(by_nextflow)] == ["", "", "content"]
    for worker in (by_nextflow, embedded):
        assert sorted(p.name for p in (worker / "out" / "ERR1").iterdir()) == [
            "ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
        assert not (worker / "out" / "ERR2").exists()
        assert not (worker / "partial").exists() or not any((worker / "partial").iterdir())
    assert json.loads((by_nextflow / "out" / "DONE.json").read_text())["runs_failed"] == 1
    # the verified run's task folder is cleaned; the failed run's stays for a person to read
    trace = (by_nextflow / "pipeline_trace.tsv").read_text()
    workdirs = dict(re.findall(r"\t(ERR\d)\t.*\t(/\S+)$", trace, re.M))
    assert not Path(workdirs["ERR1"]).exists() and Path(workdirs["ERR2"]).exists()


def test_a_task_that_dies_without_a_verdict_is_a_transient_failure_from_the_trace(
        tmp_path, file_server):
    worker = with_pipeline(make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"],
                                                               "ERR2": ["ERR2_1.fastq.gz"]}))
    env, _ = nextflow_on_path(tmp_path)
    result = run_chunk(worker, {**env, "FAKE_NF_KILL": "ERR2"})
    assert result.returncode == 0, result.stderr
    ok, died = manifest(worker)
    assert ok["status"] == "ok"
    assert (died["status"], died["cause"], died["attempts"]) == ("failed", "transient", "2")
    assert "died without a verdict (exit 137, 2 attempts)" in died["error"]
    assert "ERR2: task FAILED (exit 137) after 2 attempts" in result.stderr


def test_a_failed_pipeline_keeps_the_finished_runs_and_asks_for_a_restart(tmp_path,
                                                                         file_server):
    worker = with_pipeline(make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]}))
    env, _ = nextflow_on_path(tmp_path)
    result = run_chunk(worker, {**env, "FAKE_NF_EXIT": "1"})
    assert result.returncode == 70
    assert "pipeline exited with 1" in result.stderr
    assert [r["status"] for r in manifest(worker)] == ["ok"]
    assert not (worker / "out" / "DONE.json").exists()


def test_without_nextflow_the_runner_never_needs_it(tmp_path, file_server):
    if shutil.which("nextflow"):
        pytest.skip("nextflow is installed here")
    worker = make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]})
    assert run_chunk(worker, None).returncode == 0
    assert not (worker / "pipeline_trace.tsv").exists()


def test_the_manifest_takes_each_published_verdict_while_the_pipeline_runs(tmp_path,
                                                                          file_server):
    worker = with_pipeline(make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"],
                                                               "ERR2": ["ERR2_1.fastq.gz"]}))
    file_server.faults["/vol1/ERR2/ERR2_1.fastq.gz"] = Fault("hold", after=100)
    env, _ = nextflow_on_path(tmp_path)
    runner = subprocess.Popen([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                               "--timeout", "30"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (worker / "out" / "manifest.tsv").exists(), "the first verdict")
        assert runner.poll() is None  # ERR2 is still being fetched
        assert [(r["run"], r["status"]) for r in manifest(worker)] == [("ERR1", "ok")]
    finally:
        file_server.release.set()
        runner.communicate(timeout=120)
    assert runner.returncode == 0
    assert [r["status"] for r in manifest(worker)] == ["ok", "ok"]


def test_a_restarted_runner_hands_the_pipeline_only_the_runs_not_yet_finished(tmp_path,
                                                                             file_server):
    worker = with_pipeline(make_worker(tmp_path, file_server, {
        "ERR1": ["ERR1_1.fastq.gz"], "ERR2": ["ERR2_1.fastq.gz"], "ERR3": ["ERR3_1.fastq.gz"]}))
    env, record = nextflow_on_path(tmp_path)
    assert run_chunk(worker, env).returncode == 0
    # As if the runner died: ERR1 in the manifest, ERR2 published but not yet entered,
    # ERR3 never finished.
    lines = (worker / "out" / "manifest.tsv").read_text().splitlines()
    (worker / "out" / "manifest.tsv").write_text("\n".join(lines[:2]) + "\n")
    (worker / "out" / "DONE.json").unlink()
    shutil.rmtree(worker / "out" / "ERR3")
    (worker / "verdicts" / "ERR3.verdict.tsv").unlink()
    record.unlink()
    requests = len(file_server.requests)

    result = run_chunk(worker, env)

    assert result.returncode == 0, result.stderr
    call = json.loads(record.read_text())["argv"]
    pending = Path(call[call.index("--chunk") + 1])
    assert pending.name == "pending.tsv"
    assert [line.split("\t")[0] for line in pending.read_text().splitlines()[1:]] == ["ERR3"]
    assert [r["path"] for r in file_server.requests[requests:]] == ["/vol1/ERR3/ERR3_1.fastq.gz"]
    assert [(r["run"], r["status"]) for r in manifest(worker)] == [
        ("ERR1", "ok"), ("ERR2", "ok"), ("ERR3", "ok")]


def test_a_task_resumes_the_partial_file_an_earlier_attempt_left(tmp_path, file_server):
    worker = with_pipeline(make_worker(tmp_path, file_server, {"ERR1": ["ERR1_1.fastq.gz"]}))
    data = file_server.files["/vol1/ERR1/ERR1_1.fastq.gz"]
    stage = worker / "partial" / "ERR1"
    stage.mkdir(parents=True)
    (stage / "ERR1_1.fastq.gz.part").write_bytes(data[:3000])  # what a killed task received
    (stage / "ERR1_1.fastq.gz.tries").write_text("1\n")
    env, _ = nextflow_on_path(tmp_path)
    assert run_chunk(worker, env).returncode == 0
    (request,) = file_server.requests
    assert request["range"] == "bytes=3000-" and request["sent"] == len(data) - 3000
    (row,) = manifest(worker)
    assert (row["status"], row["attempts"]) == ("ok", "2")  # the earlier try counts too
