"""What a worker brings home: with ``worker.json`` asking for assemblies, a chunk of simulated
runs comes back as contigs and reports, with only the reads home asked for; a run that cannot
assemble is a fact about the run, never a fetch failure or an outage."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from products import Plan, Settings, assembly_options, plan

from .conftest import BIN, GENOME_LENGTH, Sample, find_python
from .nextflow_stub import params_block, render
from .test_assemble import processes_working_in
from .test_pipeline import MAIN_NF, nextflow_on_path, with_pipeline

# One core each, so that the two cores of a test machine assemble two runs at once; memory
# as home writes it, a float.
SMALL = {"assembly_threads": 1, "assembly_memory_gb": 4.0}
# worker.json as home writes it (src/backend/compute/base.py worker_options), every key
AS_HOME_WRITES = {"products": "assembly", "assembler": "skesa", "min_contig": 200,
                  "min_total_length": 0, "min_n50": 0, "assembly_threads": 1,
                  "assembly_memory_gb": 4.0, "reads_on_failure": True}


def chunk_worker(tmp_path: Path, file_server, runs: dict[str, list[Path]],
                 settings: dict[str, object] | None, name: str = "mf-562-0-abc123") -> Path:
    """A worker folder whose chunk lists ``runs`` (paired FASTQ files) served over loopback,
    with ``worker.json`` as home writes it."""
    worker = tmp_path / name
    worker.mkdir()
    lines = ["run_accession\turls\tmd5s\tbytes"]
    for run, reads in runs.items():
        datas = [path.read_bytes() for path in reads]
        urls = [file_server.add(f"vol1/{run}/{run}_{mate}.fastq.gz", data)
                for mate, data in enumerate(datas, start=1)]
        lines.append("\t".join([run, ";".join(urls),
                                ";".join(hashlib.md5(d).hexdigest() for d in datas),
                                ";".join(str(len(d)) for d in datas)]))
    (worker / "chunk.tsv").write_text("\n".join(lines) + "\n")
    (worker / "token").write_text("t0ken")
    (worker / "callback_url").write_text("\n")
    if settings is not None:
        (worker / "worker.json").write_text(json.dumps(settings))
    return worker


def run_chunk(worker: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                           "--timeout", "5", "--retries", "1"],
                          capture_output=True, text=True, timeout=300, env=env)


def manifest(worker: Path) -> list[tuple[str, str, str]]:
    with open(worker / "out" / "manifest.tsv") as handle:
        return [(r["run"], r["file"], r["status"])
                for r in csv.DictReader(handle, delimiter="\t")]


def files(worker: Path, run: str) -> list[str]:
    return sorted(p.name for p in (worker / "out" / run).iterdir())


def transient(worker: Path) -> dict[str, str]:
    """Runs whose rows all failed as ``transient``, with the error of their first file."""
    with open(worker / "out" / "manifest.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    runs = {r["run"] for r in rows if r["cause"] == "transient" and r["status"] == "failed"}
    return {run: next(r["error"] for r in rows if r["run"] == run).split(": ", 1)[1]
            for run in runs
            if all(r["cause"] == "transient" for r in rows if r["run"] == run)}


def report(worker: Path, run: str) -> dict:
    return json.loads((worker / "out" / run / f"{run}.assembly.json").read_text())


def done(worker: Path) -> dict:
    return json.loads((worker / "out" / "DONE.json").read_text())


def assert_assembled(worker: Path, run: str) -> dict:
    got = report(worker, run)
    assert got["status"] == "assembled", got["error"]
    assert abs(got["total_length"] - GENOME_LENGTH) <= 0.02 * GENOME_LENGTH
    contigs = worker / "out" / run / f"{run}.contigs.fa.gz"
    assert got["contigs_md5"] == hashlib.md5(contigs.read_bytes()).hexdigest()
    return got


def test_with_products_assembly_runs_come_home_as_contigs_and_the_random_one_as_its_reads(
        tmp_path, file_server, sample: Sample, noise: list[Path]):
    worker = chunk_worker(tmp_path, file_server, {
        "ERR1": sample.reads, "ERR2": sample.reads, "ERR3": noise}, AS_HOME_WRITES)

    result = run_chunk(worker)

    assert result.returncode == 0, result.stderr
    assert "skesa, 2 at a time, 1 cores and 4 GB each" in result.stderr
    for run in ("ERR1", "ERR2"):
        assert files(worker, run) == [f"{run}.assembly.json", f"{run}.contigs.fa.gz"]
        got = assert_assembled(worker, run)
        assert got["reads_deleted"] is True
        assert "--cores 1 --memory 4 " in got["commands"]["skesa"]
    failed = report(worker, "ERR3")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("skesa exited with 1: ")
    # reads_on_failure (the default): the reads stay, so they come home instead
    assert files(worker, "ERR3") == ["ERR3.assembly.json", "ERR3_1.fastq.gz", "ERR3_2.fastq.gz"]
    # The manifest is the fetch's: every file verified, the failed assembly included.
    assert manifest(worker) == [(run, f"{run}_{mate}.fastq.gz", "ok")
                                for run in ("ERR1", "ERR2", "ERR3") for mate in (1, 2)]
    summary = done(worker)
    assert (summary["runs_ok"], summary["runs_failed"]) == (3, 0)
    assert (summary["runs_assembled"], summary["runs_assembly_failed"]) == (2, 1)

    # A runner started again takes the assembled runs as finished, reads gone and all.
    (worker / "out" / "DONE.json").unlink()
    requests = len(file_server.requests)
    again = run_chunk(worker)
    assert again.returncode == 0, again.stderr
    assert "3 runs, 3 finished before" in again.stderr
    assert len(file_server.requests) == requests
    assert (done(worker)["runs_assembled"], done(worker)["runs_assembly_failed"]) == (2, 1)


def test_through_the_pipeline_both_keeps_the_reads_and_a_failed_run_may_drop_its_own(
        tmp_path, file_server, sample: Sample, noise: list[Path]):
    worker = with_pipeline(chunk_worker(
        tmp_path, file_server, {"ERR1": sample.reads, "ERR2": noise},
        {"products": "both", "reads_on_failure": False, **SMALL}))
    env, record = nextflow_on_path(tmp_path)

    result = run_chunk(worker, env)

    assert result.returncode == 0, result.stderr
    argv = json.loads(record.read_text())["argv"]
    assert argv[argv.index("--products") + 1] == "both"
    assert files(worker, "ERR1") == ["ERR1.assembly.json", "ERR1.contigs.fa.gz",
                                     "ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
    assert assert_assembled(worker, "ERR1")["reads_deleted"] is False
    for mate, path in enumerate(sample.reads, start=1):  # the very reads ENA has
        assert (worker / "out" / "ERR1" / f"ERR1_{mate}.fastq.gz").read_bytes() == \
            path.read_bytes()
    assert files(worker, "ERR2") == ["ERR2.assembly.json"]
    assert report(worker, "ERR2")["status"] == "failed"
    assert [status for _, _, status in manifest(worker)] == ["ok"] * 4
    summary = done(worker)
    assert (summary["runs_assembled"], summary["runs_assembly_failed"]) == (1, 1)
    # Verified and assembled: no task folder is left in work/, none holds a copy of the reads.
    assert not list((worker / "work").rglob("*.fastq.gz"))


def test_a_runner_stopped_while_assembling_stops_the_assembler_and_leaves_the_run_unfinished(
        tmp_path, file_server, sample: Sample):
    worker = chunk_worker(tmp_path, file_server, {"ERR1": sample.reads},
                          {"products": "assembly", **SMALL})
    run_dir = (worker / "out" / "ERR1").resolve()
    runner = subprocess.Popen([sys.executable, str(BIN / "run_chunk.py"), str(worker)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # until SKESA runs, at most two minutes
            if (run_dir / ".assembly-work" / "skesa.log").exists() or runner.poll() is not None:
                break
            time.sleep(0.1)
        assert runner.poll() is None, "the runner ended before SKESA started"
        runner.send_signal(signal.SIGTERM)  # the runner only, as a supervisor would
        _, stderr = runner.communicate(timeout=120)
    finally:
        runner.kill()

    assert runner.returncode == 143, stderr
    assert processes_working_in(run_dir) == []
    assert files(worker, "ERR1") == ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
    assert not (worker / "out" / "manifest.tsv").exists()
    assert not (worker / "out" / "DONE.json").exists()


def test_an_assemble_task_that_dies_fails_its_run_as_transient_the_workers_fault(
        tmp_path, file_server, noise):
    worker = with_pipeline(chunk_worker(tmp_path, file_server, {"ERR1": noise, "ERR2": noise},
                                        {"products": "assembly", **SMALL}))
    env, _ = nextflow_on_path(tmp_path)

    result = run_chunk(worker, {**env, "FAKE_NF_KILL_ASSEMBLE": "ERR1"})

    assert result.returncode == 0, result.stderr
    assert "ERR1: ASSEMBLE (ERR1) FAILED (exit 137)" in result.stderr
    assert transient(worker) == {"ERR1": "verified, but the assembly task published no report"}
    assert not (worker / "out" / "ERR1").exists()
    # ERR2 is judged: its assembly failed, which is no fetch failure
    assert report(worker, "ERR2")["status"] == "failed"
    assert [status for run, _, status in manifest(worker) if run == "ERR2"] == ["ok", "ok"]
    summary = done(worker)
    assert (summary["runs_ok"], summary["runs_failed"], summary["runs_transient"],
            summary["runs_assembly_failed"]) == (1, 1, 1, 1)


def test_reads_only_workers_write_no_assembly_numbers(tmp_path, file_server, noise):
    worker = chunk_worker(tmp_path, file_server, {"ERR1": noise}, None)

    assert run_chunk(worker).returncode == 0

    assert files(worker, "ERR1") == ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
    assert "runs_assembled" not in done(worker)


def test_the_products_option_overrides_worker_json(tmp_path, file_server, noise):
    worker = chunk_worker(tmp_path, file_server, {"ERR1": noise}, {"products": "assembly"})

    result = subprocess.run([sys.executable, str(BIN / "run_chunk.py"), str(worker),
                             "--products", "reads"], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert files(worker, "ERR1") == ["ERR1_1.fastq.gz", "ERR1_2.fastq.gz"]
    assert "runs_assembled" not in done(worker)


def test_a_worker_without_fastp_fails_its_runs_as_transient_so_they_cost_no_attempt(
        tmp_path, file_server, noise):
    worker = chunk_worker(tmp_path, file_server, {"ERR1": noise}, {"products": "assembly"})
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    result = run_chunk(worker, {**os.environ, "PATH": str(empty)})

    assert result.returncode == 0, result.stderr
    assert "install the Debian package fastp" in result.stderr
    assert "ERR1: assemble_run.py exited with 3" in result.stderr
    # the worker's fault, not the run's: transient, which home gives back at no attempt
    assert transient(worker) == {"ERR1": "verified, but the assembly step gave no report"}
    assert files(worker, "ERR1") == []  # the reads need not travel home for nothing
    summary = done(worker)
    assert (summary["runs_ok"], summary["runs_transient"], summary["runs_assembled"]) == \
        (0, 1, 0)


@pytest.mark.parametrize(("written", "message"), [
    ({"products": "genomes"}, "products 'genomes' is not one of reads, assembly, both"),
    ({"products": "assembly", "min_contig": "200"}, "min_contig must be a whole number"),
    ({"min_n50": 1.5}, "min_n50 must be a whole number ≥ 0, not 1.5"),
    ({"assembly_memory_gb": -1}, "assembly_memory_gb must be a number ≥ 0, not -1"),
    ({"reads_on_failure": 1}, "reads_on_failure must be true or false"),
    ({"assembler": "spades"}, "assembler 'spades' is not one of skesa, megahit"),
])
def test_a_worker_json_home_got_wrong_fails_the_chunk_saying_which_key(
        tmp_path, written, message):
    worker = tmp_path / "mf-1-0-aaaaaa"
    worker.mkdir()
    (worker / "chunk.tsv").write_text("run_accession\turls\tmd5s\tbytes\n")
    (worker / "worker.json").write_text(json.dumps(written))

    result = run_chunk(worker)

    assert result.returncode == 1
    assert done(worker)["status"] == "failed"
    assert message in done(worker)["error"]


def test_assemblies_share_the_cores_and_the_ram_and_skesa_never_takes_more_than_32_gb():
    # SKESA's own defaults: every core, 32 GB; here one assembly gets all cores, 3/4 of RAM
    assert plan(Settings(), cores=8, ram_gb=64) == Plan(parallel=1, threads=8, memory_gb=32)
    assert plan(Settings(), cores=2, ram_gb=4) == Plan(parallel=1, threads=2, memory_gb=3)
    # two cores each: four at once, the 48 GB shared between them
    assert plan(Settings(assembly_threads=2), cores=8, ram_gb=64) == Plan(4, 2, 12)
    # 20 GB each fits three times into 64 GB, whatever the cores would allow
    assert plan(Settings(assembly_threads=2, assembly_memory_gb=20), cores=8,
                ram_gb=64) == Plan(3, 2, 20)
    # whole GB for the assemblers, as home may write memory with a fraction
    assert plan(Settings(assembly_threads=4, assembly_memory_gb=7.5), cores=8,
                ram_gb=64) == Plan(2, 4, 7)
    # more threads than cores, or more memory than RAM: still one at a time
    assert plan(Settings(assembly_threads=16, assembly_memory_gb=100), cores=4,
                ram_gb=8) == Plan(1, 16, 100)


@pytest.mark.parametrize("settings", [
    Settings(products="assembly"),
    Settings(products="both", reads_on_failure=False, assembler="megahit", min_contig=500,
             min_total_length=4_000_000, min_n50=20_000),
])
def test_the_assemble_process_runs_the_command_of_the_embedded_path(settings):
    sys.path.insert(0, str(BIN))
    from chunk_state import Options
    from nextflow_path import nextflow_argv

    sizes = Plan(parallel=2, threads=3, memory_gb=7)
    argv = nextflow_argv(Path("/w/x"), Path("/w/chunk.tsv"), Options(), settings, sizes)
    declared = params_block(MAIN_NF)
    params = {name: default for name, (_, default) in declared.items()}
    for key, value in itertools.pairwise(argv):
        if key.startswith("--"):
            kind = type(params[key[2:]])
            params[key[2:]] = value == "true" if kind is bool else kind(value)

    script = render(MAIN_NF, {"run": "ERR1"}, params, "ASSEMBLE").replace("\\\n", " ")
    (line,) = [line for line in script.splitlines() if "assemble_run.py" in line]

    assert shlex.split(line) == ["assemble_run.py", "ERR1", "--run", "ERR1",
                                 *assembly_options(settings, sizes)]
    assert (params["assembly_parallel"], params["assembly_threads"],
            params["assembly_memory_gb"]) == (2, 3, 7)


def test_the_assembly_path_runs_under_python_3_9(tmp_path, file_server, noise):
    python = find_python(3, 9)
    if python is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must provide a Python 3.9 (pyenv or setup-python)")
        pytest.skip("no Python 3.9 on this machine")
    worker = chunk_worker(tmp_path, file_server, {"ERR1": noise}, {"products": "assembly"})

    result = subprocess.run([python, str(BIN / "run_chunk.py"), str(worker)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert report(worker, "ERR1")["status"] == "failed"  # random reads, judged all the same
    assert (done(worker)["runs_ok"], done(worker)["runs_assembly_failed"]) == (1, 1)
