"""Reading a worker's ``out/`` at home and verifying it against the accession list.

Paths come from the accession list (validated when ENA's answer was parsed), never from the
worker's manifest, so a worker cannot make home write outside ``genomes/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import OperationError
from backend.state.accessions import Run

BUFFER = 1 << 20


@dataclass
class Verdict:
    """Per run: verified files; failures the worker reported, by cause (a content failure
    counts an attempt, a transient one never does); runs it never finished; and problems found
    at home."""

    ok: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    transient: dict[str, str] = field(default_factory=dict)
    untried: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bytes_ok: int = 0
    assemblies: dict[str, dict[str, Any]] = field(default_factory=dict)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


def read_done(out: Path) -> dict[str, Any] | None:
    """``DONE.json``; None when the worker did not finish; OperationError when it is bad."""
    try:
        done = json.loads((out / "DONE.json").read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadSummary(f"{out.name}/DONE.json is not JSON ({exc})") from None
    if not isinstance(done, dict):
        raise BadSummary(f"{out.name}/DONE.json is not a JSON object")
    return done


class BadSummary(OperationError):
    """A worker's DONE.json that cannot be read: a person must look (it is held)."""


def read_manifest(out: Path) -> dict[str, dict[str, dict[str, str]]]:
    """``manifest.tsv`` as run -> file -> row."""
    rows: dict[str, dict[str, dict[str, str]]] = {}
    path = out / "manifest.tsv"
    if not path.exists():
        return rows
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows.setdefault(row.get("run") or "", {})[row.get("file") or ""] = row
    return rows


def verify_worker_output(out: Path, runs: Sequence[str], expected: Mapping[str, Run],
                         finished: bool = True, products: str = "reads") -> Verdict:
    """Check every file the worker says it fetched: size and MD5 against the accession list.

    A run the manifest does not list was never finished: an unfinished worker's such runs are
    ``untried``; a finished worker that left one out failed it. With ``products`` other than
    ``reads``, each finished run also brings its assembly report, and its contigs when it
    assembled (checked against the MD5 the report gives); its reads come only when the worker
    kept them (``both``, or a failed assembly).
    """
    manifest = read_manifest(out)
    verdict = Verdict()
    for accession in runs:
        run = expected.get(accession)
        if run is None:
            verdict.failed[accession] = "the run is no longer in the accession list"
            continue
        rows = manifest.get(accession, {})
        if not rows and not finished:
            verdict.untried.append(accession)
            continue
        error, cause = _reported_failure(run, rows)
        if error:
            (verdict.transient if cause == "transient" else verdict.failed)[accession] = error
            continue
        files: list[Path] = []
        problems: list[str] = []
        if products != "reads":
            problems += _check_assembly(out, accession, files, verdict)
        if products in ("reads", "both") or _reads_kept(out, run):
            problems += [p for p in (_check_file(out, run, i)
                                     for i in range(len(run.fastq_files))) if p]
            files += [out / accession / Path(path).name for path in run.fastq_files]
        if problems:
            verdict.problems.extend(problems)
            continue
        verdict.ok[accession] = files
        verdict.bytes_ok += sum(path.stat().st_size for path in files)
    return verdict


def _reads_kept(out: Path, run: Run) -> bool:
    return any((out / run.accession / Path(path).name).exists() for path in run.fastq_files)


def _check_assembly(out: Path, accession: str, files: list[Path], verdict: Verdict) -> list[str]:
    """The run's assembly report (and contigs, when it assembled): problems, or none."""
    report_path = out / accession / f"{accession}.assembly.json"
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError:
        return [f"{accession}: the worker left no assembly report"]
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"{accession}/{report_path.name} is not JSON ({exc})"]
    if not isinstance(report, dict) or report.get("status") not in ("assembled", "failed"):
        return [f"{accession}/{report_path.name} has no status assembled or failed"]
    files.append(report_path)
    verdict.assemblies[accession] = report
    if report["status"] != "assembled":
        return []
    contigs = out / accession / f"{accession}.contigs.fa.gz"
    if not contigs.is_file():
        return [f"{accession}/{contigs.name} is missing after the transfer"]
    got = md5_of(contigs)
    if got != report.get("contigs_md5"):
        return [f"{accession}/{contigs.name} has MD5 {got}, the worker recorded "
                f"{report.get('contigs_md5')}"]
    files.append(contigs)
    return []


def _reported_failure(run: Run, rows: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """The worker's own error for a run and its cause, or ('', '') when every file is ok.

    The cause is ``transient`` only when every failed file failed for the host's fault; a
    manifest from before causes were recorded counts as ``content``.
    """
    errors, causes = [], set()
    for path in run.fastq_files:
        name = Path(path).name
        row = rows.get(name)
        if row is None:
            errors.append(f"{name}: not in the worker's manifest")
            causes.add("content")
        elif row.get("status") != "ok":
            errors.append(f"{name}: {row.get('error') or 'failed'}")
            causes.add(row.get("cause") or "content")
    if not errors:
        return "", ""
    return "; ".join(errors), "transient" if causes == {"transient"} else "content"


def _check_file(out: Path, run: Run, index: int) -> str:
    name = Path(run.fastq_files[index]).name
    path = out / run.accession / name
    want_bytes = run.fastq_bytes[index] if index < len(run.fastq_bytes) else -1
    want_md5 = run.fastq_md5[index] if index < len(run.fastq_md5) else ""
    if not path.is_file():
        return f"{run.accession}/{name} is missing after the transfer"
    size = path.stat().st_size
    if size != want_bytes:
        return f"{run.accession}/{name} has {size} bytes, expected {want_bytes}"
    got = md5_of(path)
    if got != want_md5:
        return f"{run.accession}/{name} has MD5 {got}, expected {want_md5}"
    return ""
