"""A taxon's accession list, ``ENA_accession_numbers/<taxon_id>.csv``: one typed row per run.

Changed only inside :meth:`AccessionList.transaction` (lock, re-read, apply, atomic write),
like the registry.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from backend.errors import RegistryError
from backend.statefile import atomic_write_text, locked, render_csv
from backend.timeutil import format_time, parse_time


class RunStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    FETCHED = "fetched"
    FAILED = "failed"


class Exclusion(StrEnum):
    """The fixed code that starts every ``exclusion_reason``."""

    PLATFORM = "platform"
    STRATEGY = "strategy"
    SOURCE = "source"
    LAYOUT = "layout"
    NO_FILES = "no_files"
    NO_MD5 = "no_md5"
    MIN_BASES = "min_bases"
    BAD_ACCESSION = "bad_accession"
    BAD_PATH = "bad_path"
    HOST_NOT_ALLOWED = "host_not_allowed"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"
    FAILED_ATTEMPTS = "failed_attempts"
    WITHDRAWN = "withdrawn"

    def reason(self, detail: str) -> str:
        return f"{self.value}: {detail}"


COLUMNS = (
    "run_accession_number",
    "excluded",
    "droplet_ip",
    "exclusion_reason",
    "status",
    "worker",
    "fastq_files",
    "fastq_bytes",
    "fastq_md5",
    "attempts",
    "last_error",
    "fetched_at",
)


@dataclass
class Run:
    """One row of an accession list."""

    run_accession_number: str
    excluded: bool = False
    droplet_ip: str = ""
    exclusion_reason: str = ""
    status: RunStatus = RunStatus.PENDING
    worker: str = ""
    fastq_files: tuple[str, ...] = ()
    fastq_bytes: tuple[int, ...] = ()
    fastq_md5: tuple[str, ...] = ()
    attempts: int = 0
    last_error: str = ""
    fetched_at: datetime | None = None

    @property
    def accession(self) -> str:
        return self.run_accession_number

    @property
    def exclusion_code(self) -> str:
        return self.exclusion_reason.split(":", 1)[0].strip() if self.excluded else ""

    @property
    def total_bytes(self) -> int:
        return sum(self.fastq_bytes)

    @property
    def wanted(self) -> bool:
        return not self.excluded

    def exclude(self, code: Exclusion, detail: str) -> None:
        self.excluded = True
        self.exclusion_reason = code.reason(detail)

    def include(self) -> None:
        self.excluded = False
        self.exclusion_reason = ""

    def to_text(self) -> list[str]:
        return [
            self.run_accession_number,
            str(self.excluded),
            self.droplet_ip,
            self.exclusion_reason,
            self.status.value,
            self.worker,
            ";".join(self.fastq_files),
            ";".join(str(size) for size in self.fastq_bytes),
            ";".join(self.fastq_md5),
            str(self.attempts),
            self.last_error,
            format_time(self.fetched_at),
        ]

    @classmethod
    def from_text(cls, values: dict[str, str]) -> Run:
        def split(name: str) -> tuple[str, ...]:
            return tuple(part for part in values.get(name, "").split(";") if part)

        excluded = values.get("excluded", "").strip().lower()
        if excluded not in {"", "true", "false"}:
            raise ValueError(f"column excluded has {values['excluded']!r}: expected True or False")
        try:
            status = RunStatus(values.get("status", "").strip() or "pending")
        except ValueError:
            raise ValueError(f"column status has {values.get('status')!r}") from None
        try:
            sizes = tuple(int(size) for size in split("fastq_bytes"))
            attempts = int(values.get("attempts", "").strip() or 0)
            fetched_at = parse_time(values.get("fetched_at", ""))
        except ValueError as exc:
            raise ValueError(f"bad number or time: {exc}") from None
        return cls(
            run_accession_number=values.get("run_accession_number", "").strip(),
            excluded=excluded == "true",
            droplet_ip=values.get("droplet_ip", "").strip(),
            exclusion_reason=values.get("exclusion_reason", ""),
            status=status,
            worker=values.get("worker", "").strip(),
            fastq_files=split("fastq_files"),
            fastq_bytes=sizes,
            fastq_md5=split("fastq_md5"),
            attempts=attempts,
            last_error=values.get("last_error", ""),
            fetched_at=fetched_at,
        )


class AccessionList:
    """The accession list of one taxon."""

    def __init__(self, data_dir: Path, taxon_id: int) -> None:
        self.taxon_id = taxon_id
        self.path = Path(data_dir) / "ENA_accession_numbers" / f"{taxon_id}.csv"

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Run]:
        """Runs by accession, in file order; empty when the file does not exist."""
        return {run.accession: run for run in self.runs()}

    def runs(self) -> Iterator[Run]:
        """Runs one at a time, for lists too large to hold (readers need no lock)."""
        if not self.path.exists():
            return
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for values in reader:
                if None in values or None in values.values():
                    raise RegistryError(self.path, reader.line_num, "wrong number of fields")
                try:
                    yield Run.from_text(values)
                except ValueError as exc:
                    raise RegistryError(self.path, reader.line_num, str(exc)) from None

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Run]]:
        """Lock, re-read, let the caller change runs, then write them atomically."""
        with locked(self.path):
            runs = self.load()
            yield runs
            self._write(runs)

    @contextmanager
    def rewrite(self) -> Iterator[tuple[dict[str, Run], Callable[[Run], None]]]:
        """Lock, read the current runs, and stream a whole new list row by row.

        For lists too large to hold twice: the caller gets the current runs and a ``write``
        function; the new file replaces the old one atomically when the block ends.
        """
        with locked(self.path):
            current = self.load()
            tmp = self.path.with_name(f".{self.path.name}.rewrite")
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(COLUMNS)
                yield current, lambda run: writer.writerow(run.to_text())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)

    def _write(self, runs: dict[str, Run]) -> None:
        atomic_write_text(self.path, render_csv(COLUMNS, [run.to_text() for run in runs.values()]))
