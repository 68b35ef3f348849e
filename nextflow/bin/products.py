"""What a worker brings home (``worker.json``) and the assembly step both runner paths share.

Home may write ``WORKER_DIR/worker.json``; without it the worker brings reads, as before.
With products ``assembly`` or ``both`` every run whose reads are verified goes through
``assemble_run.py`` before its rows enter the manifest, so a run in the manifest is finished
with its products. Standard library only, Python 3.9 or newer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path

from assemble_run import (
    ASSEMBLERS,
    DEFAULT_TIMEOUT,
    SKESA_DEFAULT_MEMORY_GB,
    delete_reads,
    physical_memory_gb,
    report_path,
    usable_cores,
)
from chunk_state import Manifest, end_process, log, size_of
from fetch_run import TRANSIENT, FetchError, Result

PRODUCTS = ("reads", "assembly", "both")
ASSEMBLE_SCRIPT = Path(__file__).resolve().parent / "assemble_run.py"
# assemble_run.py bounds each of its two tools by DEFAULT_TIMEOUT; this bounds the waiting.
MAX_ASSEMBLY_SECONDS = 2 * DEFAULT_TIMEOUT + 600
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Settings:
    """``worker.json``: every key optional, these are the defaults."""

    products: str = "reads"
    assembler: str = "skesa"
    min_contig: int = 200
    min_total_length: int = 0
    min_n50: int = 0
    assembly_threads: int = 0       # 0: the worker's cores
    assembly_memory_gb: float = 0   # 0: 3/4 of the RAM, shared by the concurrent assemblies
    reads_on_failure: bool = True   # a failed assembly keeps its reads, so they come home

    @property
    def assembles(self) -> bool:
        return self.products != "reads"


@dataclass(frozen=True)
class Plan:
    """How assemblies share this worker: at most ``parallel`` at once, each with ``threads``
    cores and ``memory_gb`` of memory, so that together they stay within its cores and RAM."""

    parallel: int
    threads: int
    memory_gb: int


def read_settings(worker: Path) -> Settings:
    """``worker.json`` checked; FetchError (permanent) when home wrote something unusable."""
    path = worker / "worker.json"
    if not path.exists():
        return Settings()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot read {path}: {exc}", permanent=True) from None
    if not isinstance(data, dict):
        raise FetchError(f"{path} is not a JSON object", permanent=True)
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(data) - set(known))
    if unknown:  # a newer home's keys: this worker does what it knows
        log(f"worker.json: ignoring unknown keys {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        if name in known:
            values[name] = _checked(name, value, known[name].type)
    settings = Settings(**values)
    if settings.products not in PRODUCTS:
        raise FetchError(f"worker.json: products {settings.products!r} is not one of "
                         f"{', '.join(PRODUCTS)}", permanent=True)
    if settings.assembler not in ASSEMBLERS:
        raise FetchError(f"worker.json: assembler {settings.assembler!r} is not one of "
                         f"{', '.join(ASSEMBLERS)}", permanent=True)
    if settings.min_contig < 1:
        raise FetchError("worker.json: min_contig must be at least 1", permanent=True)
    return settings


def _checked(name: str, value: object, kind: str) -> object:
    """``value`` if it is of the field's type (its annotation, a string here): home writes
    memory as a float (``16.0``), and a whole float is taken where an int belongs."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)  # Python's json reads Infinity and NaN
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = number and value >= 0 and value == int(value)  # type: ignore[operator, arg-type]
        value = int(value) if ok else value  # type: ignore[arg-type]
    else:
        ok = number and value >= 0  # type: ignore[operator]
    if not ok:
        want = {"bool": "true or false", "int": "a whole number ≥ 0",
                "float": "a number ≥ 0", "str": "a string"}[kind]
        raise FetchError(f"worker.json: {name} must be {want}, not {value!r}", permanent=True)
    return value


def plan(settings: Settings, cores: int | None = None, ram_gb: int | None = None) -> Plan:
    """Threads, memory and concurrency of the assemblies on a worker with ``cores`` and
    ``ram_gb`` (this machine's when not given). SKESA by itself would take every core and
    32 GB per assembly; several at once would then overcommit the worker."""
    cores = max(1, cores or usable_cores())
    ram_gb = max(1, ram_gb or physical_memory_gb())
    threads = settings.assembly_threads or cores
    parallel = max(1, cores // threads)
    if settings.assembly_memory_gb:
        memory = max(1, int(settings.assembly_memory_gb))  # the assemblers take whole GB
        parallel = max(1, min(parallel, ram_gb // memory))
    else:
        memory = max(1, min(SKESA_DEFAULT_MEMORY_GB, ram_gb * 3 // 4 // parallel))
    return Plan(parallel, threads, memory)


def assembly_options(settings: Settings, sizes: Plan) -> list[str]:
    """``assemble_run.py``'s options after ``RUN_DIR --run RUN``: the same in the embedded
    path and in main.nf's ASSEMBLE process (which spells them from its params)."""
    argv = ["--threads", str(sizes.threads), "--memory-gb", str(sizes.memory_gb),
            "--assembler", settings.assembler, "--min-contig", str(settings.min_contig),
            "--min-total-length", str(settings.min_total_length),
            "--min-n50", str(settings.min_n50)]
    if settings.products == "both":
        argv.append("--keep-reads")
    if not settings.reads_on_failure:
        argv.append("--delete-reads-on-failure")
    return argv


def read_report(run_dir: Path, run: str) -> dict[str, object] | None:
    """The run's assembly report, None when there is none (yet) or it cannot be read."""
    try:
        data = json.loads(report_path(run_dir, run).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def products_ready(run_dir: Path, run: str, results: list[Result]) -> bool:
    """A verified run's products are all in ``run_dir``: the report, the contigs it names,
    and the reads it did not delete (publishing moves them one by one, in any order)."""
    report = read_report(run_dir, run)
    if report is None:
        return False
    if report.get("status") == "assembled":
        contigs = run_dir / str(report.get("contigs_file") or "")
        if not report.get("contigs_file") or size_of(contigs) != report.get("contigs_bytes"):
            return False
    if report.get("reads_deleted"):
        return True
    return all(size_of(run_dir / r.file) == r.size for r in results if r.ok)


def record_unassembled(manifest: Manifest, run_dir: Path, results: list[Result],
                       why: str) -> None:
    """A verified run whose assembly step gave no verdict (a tool missing, the step killed):
    the worker's fault, not the run's. Its rows fail as ``transient``, so home gives the run
    back without counting an attempt, and its reads are deleted: they would travel home for
    nothing, and the next worker fetches them again."""
    run = results[0].run
    log(f"{run}: verified, but {why}: a transient failure")
    manifest.record(run, [replace(r, ok=False, cause=TRANSIENT,
                                  error=f"{r.file}: verified, but {why}") for r in results])
    if run_dir.is_dir():
        delete_reads(run_dir)


class Assembler:
    """Runs ``assemble_run.py`` for the embedded path (its caller runs ``parallel`` at once)."""

    def __init__(self, settings: Settings, sizes: Plan, stop: threading.Event) -> None:
        self.options = assembly_options(settings, sizes)
        self.parallel = sizes.parallel
        self.stop = stop

    def argv(self, run_dir: Path, run: str) -> list[str]:
        return [sys.executable, str(ASSEMBLE_SCRIPT), str(run_dir), "--run", run,
                *self.options]

    def assemble(self, run_dir: Path, run: str) -> bool:
        """Assemble one run; True when its report is written (assembled or failed), False
        when stopped or when the step could not judge the run (a tool missing: the worker's
        fault, see ``record_unassembled``)."""
        if self.stop.is_set():
            return False
        argv = self.argv(run_dir, run)
        log(f"{run}: assembling: {' '.join(argv[1:])}")
        code = self._wait(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        if code != 0:
            log(f"{run}: assemble_run.py exited with {code}")
        return code == 0 and read_report(run_dir, run) is not None

    def _wait(self, process: subprocess.Popen[bytes]) -> int:
        """The step's exit code; on a stop it gets SIGTERM, which ends its tool too."""
        for _ in range(int(MAX_ASSEMBLY_SECONDS / POLL_SECONDS)):
            try:
                return process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if self.stop.is_set():
                    break
        return end_process(process)


def assembly_counts(out: Path, runs: list[str]) -> dict[str, int]:
    """DONE.json's assembly numbers over the manifest's runs."""
    statuses = [(read_report(out / run, run) or {}).get("status") for run in runs]
    return {"runs_assembled": statuses.count("assembled"),
            "runs_assembly_failed": statuses.count("failed")}
