#!/usr/bin/env python3
"""Assemble one run's verified FASTQ files into contigs and write a report beside them.

Standard library only, Python 3.9+: this runs on workers after ``fetch_run.py`` has checked
every file's MD5. Steps: fastp trims the reads, the assembler (SKESA by default) assembles them
with its cores and memory bounded, contigs shorter than ``--min-contig`` are dropped, and
``RUN_DIR/<run>.contigs.fa.gz`` and ``RUN_DIR/<run>.assembly.json`` are written.

A run that does not assemble, or whose assembly falls below the sanity limits, gets a report
with ``status: failed`` and the reason, and the script still exits 0: a failure is a fact about
the run, which home records, not a crash of the worker. Exit 2 is for bad usage, 3 for a worker
that lacks a tool (no report then: the run is not to blame), 143 when stopped by SIGTERM (the
running tool is killed with it, and nothing is written). The reads are deleted only after a
successful assembly, and only without ``--keep-reads``; a failed run keeps them, so home may
still choose to bring them back, unless ``--delete-reads-on-failure`` says home does not want
them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chunk_state import write_atomic
from fetch_run import md5_file

FASTQ = re.compile(r"^(?P<stem>.+?)(?P<mate>_[12])?\.(?:fastq|fq)(?:\.gz)?$")
VERSION = re.compile(r"\d+(?:\.\d+)+")
WORK = ".assembly-work"
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 2000
FASTP_MAX_THREADS = 16  # fastp refuses more worker threads than this
SKESA_DEFAULT_MEMORY_GB = 32  # what SKESA takes when not told otherwise
DEFAULT_TIMEOUT = 6 * 3600  # per tool; a bacterial genome takes minutes
EXIT_MISSING_TOOL = 3
EXIT_TERMINATED = 143  # as a shell reports a process ended by SIGTERM
REPORT_KEYS = (
    "run", "status", "error", "assembler", "layout", "inputs",
    "contigs_file", "contigs_md5", "contigs_bytes",
    "contigs", "total_length", "n50", "largest_contig", "gc", "depth",
    "reads_in", "bases_in", "reads_trimmed", "bases_trimmed",
    "min_contig", "min_total_length", "min_n50", "threads", "memory_gb",
    "versions", "commands", "reads_deleted", "started_at", "finished_at", "seconds",
)


class AssemblyFailed(Exception):
    """The run could not be assembled; the message goes into the report."""


class MissingTool(Exception):
    """A program the step needs is not on PATH: the worker's fault, not the run's."""


@dataclass(frozen=True)
class Reads:
    """The files one step reads, relative to the run folder."""

    files: tuple[str, ...]

    @property
    def paired(self) -> bool:
        return len(self.files) == 2


@dataclass(frozen=True)
class Limits:
    threads: int
    memory_gb: int
    min_contig: int


@dataclass(frozen=True)
class Assembler:
    """How to call one assembler: its argv, where it leaves contigs, how to ask its version."""

    program: str
    build: Callable[[Reads, str, Limits], list[str]]
    contigs: Callable[[str], str]
    version_argv: tuple[str, ...] = ("--version",)


def skesa_argv(reads: Reads, out: str, limits: Limits) -> list[str]:
    """SKESA with its cores and memory bounded (its defaults: every core and 32 GB)."""
    return ["skesa", "--reads", ",".join(reads.files), "--cores", str(limits.threads),
            "--memory", str(limits.memory_gb), "--min_contig", str(limits.min_contig),
            "--contigs_out", f"{out}/contigs.fa"]


def megahit_argv(reads: Reads, out: str, limits: Limits) -> list[str]:
    """MEGAHIT bounded likewise; it insists on creating its output folder itself."""
    first = reads.files[0]
    inputs = ["-1", first, "-2", reads.files[1]] if reads.paired else ["-r", first]
    return ["megahit", *inputs, "-t", str(limits.threads), "-m", str(limits.memory_gb * 10**9),
            "--min-contig-len", str(limits.min_contig), "-o", f"{out}/megahit"]


ASSEMBLERS: dict[str, Assembler] = {
    "skesa": Assembler("skesa", skesa_argv, lambda out: f"{out}/contigs.fa"),
    "megahit": Assembler("megahit", megahit_argv, lambda out: f"{out}/megahit/final.contigs.fa"),
}


@dataclass
class Report:
    """The report's fields; unknown values stay None (``null`` in the JSON)."""

    run: str
    assembler: str
    limits: Limits
    min_total_length: int
    min_n50: int
    values: dict[str, object] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def as_dict(self, status: str, error: str) -> dict[str, object]:
        now = time.time()
        data: dict[str, object] = dict.fromkeys(REPORT_KEYS)
        data.update(self.values)
        data.update(run=self.run, status=status, error=error, assembler=self.assembler,
                    min_contig=self.limits.min_contig, min_total_length=self.min_total_length,
                    min_n50=self.min_n50, threads=self.limits.threads,
                    memory_gb=self.limits.memory_gb, started_at=_utc(self.started),
                    finished_at=_utc(now), seconds=round(now - self.started, 1))
        data["reads_deleted"] = bool(data["reads_deleted"])
        return data


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


# --- the reads ---------------------------------------------------------------------------


def fastq_files(run_dir: Path) -> list[str]:
    """The FASTQ files in the run folder (never a ``.part`` left by an unfinished fetch)."""
    return sorted(p.name for p in run_dir.iterdir() if p.is_file() and FASTQ.match(p.name))


def find_reads(run_dir: Path) -> Reads:
    """The pair ``*_1``/``*_2`` if there is one (a third, unpaired file is ignored), else the
    single file; anything else is a failure to report."""
    names = fastq_files(run_dir)
    mates: dict[str, dict[str, str]] = {}
    for match in filter(None, map(FASTQ.match, names)):
        if match["mate"]:
            mates.setdefault(match["stem"], {})[match["mate"]] = match.string
    pairs = [(m["_1"], m["_2"]) for m in mates.values() if set(m) == {"_1", "_2"}]
    if len(pairs) == 1:
        return Reads(pairs[0])
    if len(pairs) > 1:
        raise AssemblyFailed(f"more than one pair of FASTQ files: {', '.join(names)}")
    if len(names) == 1:
        return Reads((names[0],))
    if not names:
        raise AssemblyFailed("no FASTQ files in the run folder")
    raise AssemblyFailed(f"cannot tell which FASTQ files belong together: {', '.join(names)}")


# --- running the tools -------------------------------------------------------------------


def tool_version(program: str, argv: tuple[str, ...] = ("--version",)) -> str:
    """The version number a program prints (fastp on stderr, SKESA on stdout, both with the
    program's name around it), or its last line when there is no number in it."""
    try:
        done = subprocess.run([program, *argv], capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingTool(f"{program} cannot be run ({exc}): install the Debian package "
                          f"{program}") from exc
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
    lines = [line for line in lines if line and line != f"{program} --version"]
    if not lines:
        return "unknown"
    number = VERSION.search(lines[-1])
    return number.group(0) if number else lines[-1]


def tail(path: Path) -> str:
    """The last lines a tool wrote to stderr, enough to say why it failed."""
    if not path.exists():
        return ""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])[-STDERR_TAIL_CHARS:]


def execute(argv: list[str], run_dir: Path, log: Path, timeout: float) -> None:
    """Run one tool in the run folder; raise AssemblyFailed with its stderr when it fails."""
    if shutil.which(argv[0]) is None:
        raise MissingTool(f"{argv[0]} is not on PATH: install the Debian package {argv[0]}")
    try:
        with open(log, "wb") as err:
            code = subprocess.run(argv, cwd=run_dir, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err, timeout=timeout,
                                  check=False).returncode
    except subprocess.TimeoutExpired as exc:
        raise AssemblyFailed(f"{argv[0]} did not finish within {timeout:g} s") from exc
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        last = tail(log)
        raise AssemblyFailed(f"{argv[0]} {how}" + (f": {last}" if last else ""))


def fastp_argv(reads: Reads, threads: int) -> list[str]:
    """Trim with fastp; its reports go to the work folder, its own threads are bounded."""
    argv = ["fastp", "-w", str(max(1, min(threads, FASTP_MAX_THREADS))),
            "-j", f"{WORK}/fastp.json", "-h", f"{WORK}/fastp.html", "-i", reads.files[0],
            "-o", f"{WORK}/trimmed_1.fastq.gz"]
    if reads.paired:
        argv += ["-I", reads.files[1], "-O", f"{WORK}/trimmed_2.fastq.gz",
                 "--detect_adapter_for_pe"]
    return argv


def trimmed(reads: Reads) -> Reads:
    names = ["trimmed_1.fastq.gz", "trimmed_2.fastq.gz"][: len(reads.files)]
    return Reads(tuple(f"{WORK}/{name}" for name in names))


def read_counts(fastp_json: Path) -> dict[str, object]:
    """Reads and bases before and after trimming, from fastp's own JSON summary."""
    try:
        summary = json.loads(fastp_json.read_text())["summary"]
        before, after = summary["before_filtering"], summary["after_filtering"]
    except (OSError, ValueError, KeyError) as exc:
        raise AssemblyFailed(f"fastp left no usable JSON report: {exc!r}") from exc
    return {"reads_in": int(before["total_reads"]), "bases_in": int(before["total_bases"]),
            "reads_trimmed": int(after["total_reads"]), "bases_trimmed": int(after["total_bases"])}


# --- the contigs -------------------------------------------------------------------------


def read_fasta(path: Path) -> Iterator[tuple[str, str]]:
    """(header, sequence) pairs; headers without the ``>``."""
    header, chunks = None, []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks)
                header, chunks = line[1:], []
            elif line:
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


def read_contigs(path: Path, assembler: Assembler) -> list[tuple[str, str]]:
    try:
        return list(read_fasta(path))
    except OSError as exc:
        raise AssemblyFailed(f"{assembler.program} finished but left no contigs: {exc}") from exc


def n50(lengths: list[int]) -> int:
    """The length of the contig at which the longest contigs reach half the total."""
    half, running = sum(lengths) / 2, 0
    for length in sorted(lengths, reverse=True):
        running += length
        if running >= half:
            return length
    return 0


@dataclass(frozen=True)
class Stats:
    contigs: int
    total_length: int
    n50: int
    largest_contig: int
    gc: float


def contig_stats(sequences: list[str]) -> Stats:
    """Count, total, N50, largest and GC (over the A, C, G and T bases only, not N)."""
    lengths = [len(s) for s in sequences]
    upper = [s.upper() for s in sequences]
    gc = sum(s.count("G") + s.count("C") for s in upper)
    acgt = gc + sum(s.count("A") + s.count("T") for s in upper)
    return Stats(len(lengths), sum(lengths), n50(lengths), max(lengths, default=0),
                 round(gc / acgt, 4) if acgt else 0.0)


def write_contigs(path: Path, run: str, contigs: list[tuple[str, str]]) -> None:
    """Gzipped FASTA, 80 columns, each contig named ``<run>_<n>`` with the assembler's name
    kept after it; no timestamp in the gzip header, so the same contigs give the same MD5."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               mtime=0) as out:
        for i, (header, sequence) in enumerate(contigs, 1):
            out.write(f">{run}_{i} {header}\n".encode())
            for start in range(0, len(sequence), 80):
                out.write(sequence[start:start + 80].encode() + b"\n")
    os.replace(tmp, path)


def check_sanity(stats: Stats, min_contig: int, min_total: int, min_n50: int) -> None:
    if not stats.contigs:
        raise AssemblyFailed(f"no contigs of at least {min_contig} bp")
    if stats.total_length < min_total:
        raise AssemblyFailed(f"total length {stats.total_length} bp is below the limit of "
                             f"{min_total} bp (--min-total-length)")
    if stats.n50 < min_n50:
        raise AssemblyFailed(f"N50 {stats.n50} bp is below the limit of {min_n50} bp (--min-n50)")


# --- the step ----------------------------------------------------------------------------


def contigs_path(run_dir: Path, run: str) -> Path:
    return run_dir / f"{run}.contigs.fa.gz"


def report_path(run_dir: Path, run: str) -> Path:
    return run_dir / f"{run}.assembly.json"


def write_json(path: Path, data: dict[str, object]) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def already_assembled(run_dir: Path, run: str) -> bool:
    """A report saying ``assembled`` whose contigs still match it: a retry has nothing to do
    (and must not turn it into a failure because the reads are gone)."""
    try:
        report = json.loads(report_path(run_dir, run).read_text())
    except (OSError, ValueError):
        return False
    contigs = contigs_path(run_dir, run)
    return (report.get("status") == "assembled" and contigs.is_file()
            and md5_file(contigs).hexdigest() == report.get("contigs_md5"))


def assemble(run_dir: Path, report: Report, assembler: Assembler, timeout: float) -> None:
    """Trim, assemble, filter, check and write the contigs; fill ``report.values`` on the way."""
    values = report.values
    reads = find_reads(run_dir)
    values.update(layout="paired" if reads.paired else "single", inputs=list(reads.files))
    values["versions"] = {"fastp": tool_version("fastp"),
                          assembler.program: tool_version(assembler.program,
                                                          assembler.version_argv)}
    commands: dict[str, str] = {}
    values["commands"] = commands
    work = run_dir / WORK
    trim = fastp_argv(reads, report.limits.threads)
    commands["fastp"] = shlex.join(trim)
    execute(trim, run_dir, work / "fastp.log", timeout)
    values.update(read_counts(work / "fastp.json"))
    build = assembler.build(trimmed(reads), WORK, report.limits)
    commands[assembler.program] = shlex.join(build)
    execute(build, run_dir, work / f"{assembler.program}.log", timeout)
    kept = [(h, s) for h, s in read_contigs(run_dir / assembler.contigs(WORK), assembler)
            if len(s) >= report.limits.min_contig]
    stats = contig_stats([s for _, s in kept])
    values.update(asdict(stats))
    if stats.total_length:
        values["depth"] = round(int(values["bases_in"]) / stats.total_length, 1)
    check_sanity(stats, report.limits.min_contig, report.min_total_length, report.min_n50)
    contigs = contigs_path(run_dir, report.run)
    write_contigs(contigs, report.run, kept)
    values.update(contigs_file=contigs.name, contigs_md5=md5_file(contigs).hexdigest(),
                  contigs_bytes=contigs.stat().st_size)


def delete_reads(run_dir: Path) -> None:
    """Every FASTQ file of the run, the ignored unpaired one too: only the assembly goes home."""
    for name in fastq_files(run_dir):
        (run_dir / name).unlink(missing_ok=True)


def finish_deleting(run_dir: Path, run: str) -> None:
    """A retry after an interruption between writing the report and deleting the reads."""
    data = json.loads(report_path(run_dir, run).read_text())
    if not data.get("reads_deleted"):
        delete_reads(run_dir)
        data["reads_deleted"] = True
        write_json(report_path(run_dir, run), data)


def run_step(run_dir: Path, report: Report, assembler: Assembler, keep_reads: bool,
             timeout: float, drop_failed: bool = False) -> dict[str, object]:
    """The whole step for one run; returns the report it wrote."""
    work = run_dir / WORK
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted attempt
    work.mkdir()
    try:
        assemble(run_dir, report, assembler, timeout)
        status, error = "assembled", ""
    except AssemblyFailed as exc:
        status, error = "failed", str(exc)
        contigs_path(run_dir, report.run).unlink(missing_ok=True)  # from an older attempt
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = report.as_dict(status, error)
    write_json(report_path(run_dir, report.run), data)
    # Reads go only once the report that replaces them is safely written.
    if (status == "assembled" and not keep_reads) or (status == "failed" and drop_failed):
        delete_reads(run_dir)
        data["reads_deleted"] = True
        write_json(report_path(run_dir, report.run), data)
    return data


# --- the command line --------------------------------------------------------------------


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def physical_memory_gb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 10**9
    except (ValueError, OSError):
        return SKESA_DEFAULT_MEMORY_GB


def default_memory_gb() -> int:
    """Three quarters of the machine, never more than SKESA would take by itself."""
    return max(1, min(SKESA_DEFAULT_MEMORY_GB, physical_memory_gb() * 3 // 4))


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Trim and assemble one run's FASTQ files; write contigs and a report.")
    parser.add_argument("run_dir", type=Path, help="the run's folder (holds its FASTQ files)")
    parser.add_argument("--run", required=True, help="the run accession, e.g. ERR123")
    parser.add_argument("--assembler", default="skesa",
                        help=f"one of {', '.join(ASSEMBLERS)} (skesa)")
    parser.add_argument("--min-contig", type=positive, default=200,
                        help="drop contigs shorter than this, bp (200)")
    parser.add_argument("--threads", type=positive, default=usable_cores(),
                        help="cores for fastp and the assembler (all usable cores)")
    parser.add_argument("--memory-gb", type=positive, default=default_memory_gb(),
                        help="memory for the assembler, GB (3/4 of RAM, at most 32)")
    parser.add_argument("--min-total-length", type=not_negative, default=0,
                        help="fail an assembly shorter than this in total, bp (0)")
    parser.add_argument("--min-n50", type=not_negative, default=0,
                        help="fail an assembly with a lower N50, bp (0)")
    parser.add_argument("--timeout", type=positive, default=DEFAULT_TIMEOUT,
                        help=f"seconds each tool may run ({DEFAULT_TIMEOUT})")
    parser.add_argument("--keep-reads", action="store_true",
                        help="keep the FASTQ files after a successful assembly")
    parser.add_argument("--delete-reads-on-failure", action="store_true",
                        help="delete the FASTQ files after a failed assembly too")
    args = parser.parse_args(argv)
    if args.assembler not in ASSEMBLERS:
        parser.error(f"unknown assembler {args.assembler!r}: choose one of "
                     f"{', '.join(ASSEMBLERS)}")
    if not args.run_dir.is_dir():
        parser.error(f"{args.run_dir} is not a folder")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.run) or args.run.startswith("."):
        parser.error(f"--run {args.run!r} is not a run accession")
    return args


def stop(signum: int, frame: object) -> None:
    """Raising here makes ``subprocess.run`` kill the running tool before the step unwinds,
    so a stopped worker leaves no assembler running on its own."""
    raise SystemExit(EXIT_TERMINATED)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop)
    run_dir: Path = args.run_dir.resolve()
    if already_assembled(run_dir, args.run):
        if not args.keep_reads:
            finish_deleting(run_dir, args.run)
        print(f"{args.run}: already assembled, nothing to do", file=sys.stderr)
        return 0
    limits = Limits(args.threads, args.memory_gb, args.min_contig)
    report = Report(args.run, args.assembler, limits, args.min_total_length, args.min_n50)
    try:
        data = run_step(run_dir, report, ASSEMBLERS[args.assembler], args.keep_reads,
                        args.timeout, args.delete_reads_on_failure)
    except MissingTool as exc:
        print(f"{args.run}: {exc}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    outcome = data["error"] or f"{data['contigs']} contigs, {data['total_length']} bp"
    print(f"{args.run}: {data['status']}: {outcome}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
