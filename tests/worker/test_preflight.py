"""Preflight: a host that cannot run a chunk says why before any fetching starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIN, find_python


def preflight(worker: Path, *args: str, python: str = sys.executable,
              env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = subprocess.run([python, str(BIN / "preflight.py"), str(worker), *args],
                            capture_output=True, text=True, timeout=60, env=env)
    return result.returncode, json.loads(result.stdout)


def worker_with(tmp_path: Path, sizes: list[int]) -> Path:
    worker = tmp_path / "mf-562-0-abc123"
    worker.mkdir()
    rows = [f"ERR{i}\thttp://127.0.0.1:9/ERR{i}.fastq.gz\t{'0' * 32}\t{size}"
            for i, size in enumerate(sizes)]
    (worker / "chunk.tsv").write_text("\n".join(["run_accession\turls\tmd5s\tbytes", *rows]))
    return worker


def test_a_host_that_can_run_the_chunk_passes(tmp_path):
    code, report = preflight(worker_with(tmp_path, [1000, 2000]))
    assert code == 0, report
    assert report["ok"] and report["reasons"] == []
    assert report["python"]["ok"]
    assert report["disk"]["need_bytes"] == int(3000 * 1.05) + 200 * 10**6
    assert report["tools"]["rsync"]


def test_a_chunk_larger_than_the_free_disk_is_refused_with_the_numbers(tmp_path):
    code, report = preflight(worker_with(tmp_path, [10**18]))
    assert code == 1
    assert not report["disk"]["ok"]
    (reason,) = report["reasons"]
    assert "GB free in" in reason and "the chunk needs" in reason


def test_bytes_already_fetched_are_not_needed_again(tmp_path):
    worker = worker_with(tmp_path, [5000])
    (worker / "partial" / "ERR0").mkdir(parents=True)
    (worker / "partial" / "ERR0" / "ERR0.fastq.gz.part").write_bytes(b"x" * 4000)
    _, report = preflight(worker)
    assert report["disk"]["need_bytes"] == int(1000 * 1.05) + 200 * 10**6


def test_the_nextflow_mode_needs_nextflow_and_java_on_path(tmp_path):
    worker = worker_with(tmp_path, [1000])
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    (empty / "rsync").symlink_to("/bin/true")
    code, report = preflight(worker, "--pipeline", "nextflow",
                             env={**os.environ, "PATH": str(empty)})
    assert code == 1
    assert report["reasons"] == ["not on PATH: nextflow, java"]


def test_an_old_python_is_named_instead_of_failing_to_start(tmp_path):
    python = find_python(3, 8) or find_python(3, 7) or find_python(3, 6)
    if python is None:
        if os.environ.get("CI"):
            raise AssertionError("CI must provide a Python older than 3.9 (pyenv)")
        pytest.skip("no Python older than 3.9 on this machine")
    code, report = preflight(worker_with(tmp_path, [1000]), python=python)
    assert code == 1
    assert report["reasons"] == [f"python {report['python']['version']} is older than 3.9"]


def test_the_nextflow_mode_refuses_a_java_too_old_for_nextflow(tmp_path):
    worker = worker_with(tmp_path, [1000])
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "rsync").symlink_to("/bin/true")
    (tools / "nextflow").symlink_to("/bin/true")
    # Java 11's answer, as Ubuntu 22.04's default-jre-headless gives it
    (tools / "java").write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    (tools / "java").chmod(0o755)
    code, report = preflight(worker, "--pipeline", "nextflow",
                             env={**os.environ, "PATH": f"{tools}:/bin:/usr/bin"})
    assert code == 1
    assert report["java_major"] == 11
    assert report["reasons"] == ["java 11 is older than 17 (Nextflow needs it)"]


def test_a_worker_asked_for_assemblies_needs_fastp_and_the_assembler(tmp_path):
    worker = worker_with(tmp_path, [1000])
    (worker / "worker.json").write_text(json.dumps({"products": "assembly"}))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "rsync").symlink_to("/bin/true")
    env = {**os.environ, "PATH": str(tools)}

    code, report = preflight(worker, env=env)

    assert code == 1
    assert report["products"] == "assembly"
    assert report["reasons"] == [
        "not on PATH for products assembly: fastp, skesa (apt-get install fastp skesa)"]

    (tools / "fastp").symlink_to("/bin/true")
    (tools / "skesa").symlink_to("/bin/true")
    code, report = preflight(worker, env=env)
    assert code == 0, report
    assert report["tools"]["skesa"] == str(tools / "skesa")


def test_a_worker_bringing_reads_home_needs_no_assembler(tmp_path):
    worker = worker_with(tmp_path, [1000])
    (worker / "worker.json").write_text(json.dumps({"products": "reads", "assembler": "skesa"}))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "rsync").symlink_to("/bin/true")

    code, report = preflight(worker, env={**os.environ, "PATH": str(tools)})

    assert code == 0, report
    assert "skesa" not in report["tools"] and report["products"] == "reads"


def test_an_assembling_worker_needs_room_for_the_trimmed_copy_of_its_largest_run(tmp_path):
    worker = worker_with(tmp_path, [1000, 3000])
    # as many cores per assembly as the host has: one at a time, one trimmed copy
    (worker / "worker.json").write_text(json.dumps(
        {"products": "assembly", "assembly_threads": os.cpu_count()}))

    _, report = preflight(worker)

    assert report["disk"]["need_bytes"] == int((4000 + 3000) * 1.05) + 200 * 10**6
