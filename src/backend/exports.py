"""The files people and scripts read, written from the database: views, never state.

``ENA_accession_numbers/<taxon>.csv`` (every run, the seed's columns first) and
``genomes/<taxon>/samplesheet.csv`` (the fetched runs, nf-core style). The CLI commands that
change runs write them before they exit; the daemon at most every
``MICROFETCH_EXPORT_SECONDS`` per taxon, and when a taxon becomes complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backend.accessions import AccessionList, Run
from backend.statefile import atomic_write_via


def genomes_dir(settings: Any, taxon_id: int) -> Path:
    return Path(settings.data_dir) / "genomes" / str(taxon_id)


def write_samplesheet(genomes: Path, runs: Iterable[Run]) -> Path:
    """``samplesheet.csv`` (nf-core style) of fetched runs: sample,fastq_1,fastq_2."""

    def write(handle: Any) -> None:
        handle.write("sample,fastq_1,fastq_2\n")
        for run in runs:
            folder = genomes / run.accession
            names = sorted(Path(path).name for path in run.fastq_files)
            first = next((n for n in names if n.endswith("_1.fastq.gz")),
                         names[0] if names else "")
            second = next((n for n in names if n.endswith("_2.fastq.gz")), "")
            paths = [str((folder / n).resolve()) if n else "" for n in (first, second)]
            handle.write(",".join([run.accession, *paths]) + "\n")

    target = genomes / "samplesheet.csv"
    atomic_write_via(target, write)
    return target


def export_taxon(settings: Any, taxon_id: int) -> None:
    """Write both files of one taxon now."""
    accessions = AccessionList.of(settings, taxon_id)
    accessions.export()
    write_samplesheet(genomes_dir(settings, taxon_id), accessions.runs(category="fetched"))
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
