"""What the pages and the API show, computed from the state files (pure reads)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.accessions import AccessionList, Run, RunStatus
from backend.logs import taxon_log_path
from backend.registry import Registry, Taxon
from backend.settings import Settings
from backend.timeutil import format_time
from backend.workers import WorkerRecord, WorkerStore


@dataclass
class Progress:
    wanted: int
    fetched: int
    pending: int
    assigned: int
    failed: int
    excluded: int
    bytes_wanted: int
    bytes_fetched: int

    @property
    def percent(self) -> float:
        return round(100.0 * self.fetched / self.wanted, 1) if self.wanted else 0.0


def progress(runs: list[Run]) -> Progress:
    wanted = [r for r in runs if r.wanted]
    status = Counter(r.status for r in wanted)
    return Progress(
        wanted=len(wanted), fetched=status[RunStatus.FETCHED],
        pending=status[RunStatus.PENDING], assigned=status[RunStatus.ASSIGNED],
        failed=sum(1 for r in runs if r.exclusion_code == "failed_attempts"),
        excluded=len(runs) - len(wanted),
        bytes_wanted=sum(r.total_bytes for r in wanted),
        bytes_fetched=sum(r.total_bytes for r in wanted if r.status is RunStatus.FETCHED),
    )


def worker_json(record: WorkerRecord) -> dict[str, Any]:
    return {"name": record.name, "backend": record.backend, "address": record.address,
            "phase": record.phase.value, "runs": len(record.runs), "bytes": record.bytes,
            "created_at": format_time(record.created_at)}


def taxon_state(settings: Settings, row: Taxon, history: list[dict[str, Any]],
                workers: list[WorkerRecord]) -> dict[str, Any]:
    """One taxon as the API shows it (like pacifica-ingest's get_state)."""
    runs = list(AccessionList(settings.data_dir, row.taxonomy_id).load().values())
    done = progress(runs)
    errors = [r.last_error for r in runs if r.last_error]
    return {
        "taxonomy_id": row.taxonomy_id,
        "scientific_name": row.scientific_name,
        "state": row.last_run_status.value or "new",
        "stage": row.stage.value,
        "stage_name": row.stage_name,
        "task_percent": done.percent,
        "runs": {k: v for k, v in asdict(done).items() if not k.startswith("bytes")},
        "bytes_wanted": done.bytes_wanted,
        "bytes_fetched": done.bytes_fetched,
        "needs_attention": row.needs_attention,
        "last_error": row.needs_attention or (errors[-1] if errors else ""),
        "last_checked": format_time(row.last_checked),
        "priority": row.priority,
        "updated": history[-1]["time"] if history else "",
        "workers": [worker_json(w) for w in workers if w.taxon_id == row.taxonomy_id],
    }


def all_states(settings: Settings) -> list[dict[str, Any]]:
    registry = Registry.from_settings(settings)
    history = registry.history(limit=100_000)
    live = WorkerStore(settings.data_dir).live()
    return [taxon_state(settings, row, [h for h in history if h["taxon"] == row.taxonomy_id],
                        live) for row in registry.load()]


def exclusion_counts(runs: list[Run]) -> dict[str, int]:
    return dict(sorted(Counter(r.exclusion_code for r in runs if r.excluded).items()))


def status_counts(runs: list[Run]) -> dict[str, int]:
    return dict(sorted(Counter(r.status.value for r in runs if r.wanted).items()))


def last_estimate(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    estimates = [h for h in history if h["field"] == "cost_estimate"]
    return estimates[-1]["new"] if estimates else None


def log_tail(settings: Settings, taxon_id: int, lines: int = 40) -> list[str]:
    assert settings.log_dir is not None
    path: Path = taxon_log_path(settings.log_dir, taxon_id)
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 64_000))
        return handle.read().decode("utf-8", "replace").splitlines()[-lines:]


def fetched_times(settings: Settings, taxon_id: int) -> list[datetime]:
    runs = AccessionList(settings.data_dir, taxon_id).load().values()
    return sorted(r.fetched_at for r in runs if r.fetched_at is not None)
