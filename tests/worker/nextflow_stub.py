"""A stand-in for Nextflow that runs main.nf's own process script, for machines without it.

It reads the typed ``params`` block and the ``FETCH_RUN`` script block from ``main.nf``,
renders the script for each run of the chunk the way Nextflow interpolates it, runs it with
``bash`` in a task folder under the work folder with ``bin/`` on PATH, publishes like the
``publishDir`` directives, retries a task that fails, and writes the trace file with the
fields of ``nextflow.config``. Not a Nextflow: only what the worker pipeline uses.

``FAKE_NF_KILL`` (a run accession) makes every attempt of that run's task die with 137, as a
killed task would; ``FAKE_NF_EXIT`` sets the pipeline's exit code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TYPES = {"Integer": int, "Float": float, "String": str, "Boolean": lambda v: v == "true"}


def params_block(main_nf: str) -> dict[str, tuple[str, object]]:
    """``name -> (type, default)`` from the script's typed ``params { }`` block."""
    block = re.search(r"^params \{\n(.*?)^\}", main_nf, re.S | re.M)
    if block is None:
        raise ValueError("main.nf has no params block")
    found = {}
    for name, kind, default in re.findall(r"^\s+(\w+): (\w+) = (.+)$", block.group(1), re.M):
        found[name] = (kind, TYPES[kind](default.strip("'\"")))
    return found


def process_script(main_nf: str, process: str = "FETCH_RUN") -> tuple[list[str], str]:
    """A process's script section: its Groovy statements and the command template."""
    body = re.search(rf"^process {process} \{{\n(.*?)^\}}", main_nf, re.S | re.M)
    if body is None:
        raise ValueError(f"main.nf has no process {process}")
    section = body.group(1).split("script:\n", 1)[1]
    before, template, _ = section.split('"""', 2)
    lines = [line.strip() for line in before.splitlines()]
    return [line for line in lines if line and not line.startswith("//")], template


def _interpolate(text: str, scope: dict[str, object]) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr.startswith("params."):
            return _groovy(scope["params"][expr.removeprefix("params.")])  # type: ignore[index]
        return _groovy(scope[expr])

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def _groovy(value: object) -> str:
    return str(value)  # Groovy prints 60.0 for a Float 60, as Python does


def render(main_nf: str, inputs: dict[str, str], params: dict[str, object]) -> str:
    """The bash command Nextflow would run for one task."""
    statements, template = process_script(main_nf)
    scope: dict[str, object] = {**inputs, "params": params}
    for statement in statements:  # only the ternary form main.nf uses
        match = re.fullmatch(r"def (\w+) = params\.(\w+) \? \"(.*)\" : '(.*)'", statement)
        if match is None:
            raise ValueError(f"the stub cannot evaluate {statement!r}")
        name, flag, then, otherwise = match.groups()
        scope[name] = _interpolate(then if params[flag] else otherwise, scope)
    return _interpolate(template, scope).replace("\\\\\n", "\\\n")


def _cli(argv: list[str]) -> tuple[Path, dict[str, str], dict[str, str]]:
    script, options, given = Path(argv[1]), {}, {}
    rest = argv[2:]
    while rest:
        key = rest.pop(0)
        if key == "-resume":
            options["resume"] = "true"
        elif key.startswith("--"):
            given[key[2:]] = rest.pop(0)
        else:
            options[key.lstrip("-")] = rest.pop(0)
    return script, options, given


def main() -> int:
    argv = sys.argv[1:]
    script, options, given = _cli(argv)
    Path(os.environ["FAKE_NF_RECORD"]).write_text(json.dumps(
        {"argv": argv, "syntax": os.environ.get("NXF_SYNTAX_PARSER")}))
    main_nf = script.read_text()
    declared = params_block(main_nf)
    unknown = set(given) - set(declared)
    if unknown:
        print(f"unknown params {sorted(unknown)}", file=sys.stderr)
        return 1
    params = {name: TYPES[kind](given[name]) if name in given else default
              for name, (kind, default) in declared.items()}
    work = Path(options["work-dir"])
    trace = []
    with open(params["chunk"], newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            trace += run_task(main_nf, script.parent / "bin", work, row, params)
    with open("pipeline_trace.tsv", "w") as handle:
        fields = ["task_id", "hash", "name", "tag", "status", "exit", "attempt", "duration",
                  "realtime", "workdir"]
        handle.write("\t".join(fields) + "\n")
        for number, task in enumerate(trace, start=1):
            handle.write("\t".join([str(number), *(str(task[f]) for f in fields[1:])]) + "\n")
    return int(os.environ.get("FAKE_NF_EXIT", "0"))


def run_task(main_nf: str, bin_dir: Path, work: Path, row: dict[str, str],
             params: dict[str, object]) -> list[dict[str, object]]:
    run = row["run_accession"]
    inputs = {"run": run, "urls": row["urls"], "md5s": row["md5s"], "bytes": row["bytes"]}
    command = render(main_nf, inputs, params)
    tasks = []
    for attempt in range(1, int(params["retries"]) + 2):  # type: ignore[call-overload]
        digest = hashlib.md5(f"{run}{attempt}".encode()).hexdigest()
        folder = work / digest[:2] / digest[2:]
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        if os.environ.get("FAKE_NF_KILL") == run:
            code = 137
        else:
            code = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=folder,
                                  env=env, check=False).returncode
        tasks.append({"hash": f"{digest[:2]}/{digest[2:8]}", "name": f"FETCH_RUN ({run})",
                      "tag": run, "status": "COMPLETED" if code == 0 else "FAILED",
                      "exit": code, "attempt": attempt, "duration": "1s", "realtime": "1s",
                      "workdir": str(folder)})
        if code == 0:
            publish(folder, run, params)
            break
    return tasks


def publish(folder: Path, run: str, params: dict[str, object]) -> None:
    """The two publishDir directives: fetched files moved, the verdict copied."""
    target = Path(str(params["outdir"])) / run
    for path in sorted((folder / "fetched").glob("*")):
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target / path.name))
    verdicts = Path(str(params["verdicts"]))
    verdicts.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.verdict.tsv"):
        shutil.copy(path, verdicts / path.name)


if __name__ == "__main__":
    sys.exit(main())
