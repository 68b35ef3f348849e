"""The files people and scripts read, written from the database: views, never state.

``ENA_accession_numbers/<taxon>.csv`` (every run, the seed's columns first) and
``genomes/<taxon>/samplesheet.csv`` (the fetched runs, nf-core style). The CLI commands that
change runs write them before they exit; the daemon at most every
``MICROFETCH_EXPORT_SECONDS`` per taxon, and when a taxon becomes complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backend.state.accessions import AccessionList, Run
from backend.state.statefile import atomic_write_via


def genomes_dir(settings: Any, taxon_id: int) -> Path:
    return Path(settings.data_dir) / "genomes" / str(taxon_id)


def write_samplesheet(genomes: Path, runs: Iterable[Run]) -> Path:
    """``samplesheet.csv`` (nf-core style) of fetched runs whose reads are at home (with
    ``assembly`` a run may bring only its contigs): sample,fastq_1,fastq_2."""

    def write(handle: Any) -> None:
        handle.write("sample,fastq_1,fastq_2\n")
        for run in runs:
            folder = genomes / run.accession
            names = sorted(Path(path).name for path in run.fastq_files)
            if run.assembly_status and not (names and (folder / names[0]).exists()):
                continue  # assembled on the worker: the reads stayed there
            first = next((n for n in names if n.endswith("_1.fastq.gz")),
                         names[0] if names else "")
            second = next((n for n in names if n.endswith("_2.fastq.gz")), "")
            paths = [str((folder / n).resolve()) if n else "" for n in (first, second)]
            handle.write(",".join([run.accession, *paths]) + "\n")

    target = genomes / "samplesheet.csv"
    atomic_write_via(target, write)
    return target


#: ``assemblies.tsv``: one row per assembled run, the report's numbers and the contigs' path.
ASSEMBLY_FIELDS = ("run", "contigs", "total_length", "n50", "largest_contig", "gc", "depth",
                   "reads_in", "bases_in", "assembler", "contigs_md5", "path")


def write_assemblies(genomes: Path, runs: Iterable[Run]) -> Path:
    """``assemblies.tsv`` of the taxon's assembled runs (reports read from home)."""

    def write(handle: Any) -> None:
        handle.write("\t".join(ASSEMBLY_FIELDS) + "\n")
        for run in runs:
            if run.assembly_status != "assembled":
                continue
            report = _report(genomes / run.accession / f"{run.accession}.assembly.json")
            values = {**report, "run": run.accession, "contigs_md5": run.assembly_md5,
                      "path": str((genomes / run.assembly_path).resolve())}
            handle.write("\t".join("" if values.get(k) is None else str(values[k])
                                   for k in ASSEMBLY_FIELDS) + "\n")

    target = genomes / "assemblies.tsv"
    atomic_write_via(target, write)
    return target


def _report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def export_taxon(settings: Any, taxon_id: int) -> None:
    """Write the taxon's files now."""
    accessions = AccessionList.of(settings, taxon_id)
    accessions.export()
    genomes = genomes_dir(settings, taxon_id)
    write_samplesheet(genomes, accessions.runs(category="fetched"))
    if settings.worker_products != "reads" or (genomes / "assemblies.tsv").exists():
        write_assemblies(genomes, accessions.runs(category="fetched"))
    accessions.db.set_meta(f"exported:{taxon_id}", str(time.time()))


def refresh_exports(settings: Any, taxon_id: int, *, force: bool = False,
                    clock: Any = time.time) -> bool:
    """Export when forced or when the last export is older than the setting; True if done."""
    db = AccessionList.of(settings, taxon_id).db
    last = float(db.meta(f"exported:{taxon_id}") or 0)
    if not force and clock() - last < settings.export_seconds:
        return False
    export_taxon(settings, taxon_id)
    return True
