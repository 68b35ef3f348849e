"""Upgrade in place: bring a data directory from before the state database into it.

The release before kept runs in ``ENA_accession_numbers/<taxon>.csv``, workers in
``workers/<name>.json`` and history in ``history.jsonl`` (rotated to ``.1`` … ``.5``). The
first command that opens the database imports them in one transaction and records that it did,
so an interrupted import leaves nothing behind and runs again, and a finished one never repeats.
The worker JSON files are then renamed ``*.json.imported`` so nobody mistakes them for state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from backend.state.store import log_import

if TYPE_CHECKING:
    from backend.state.store import Database

DONE_KEY = "legacy_import"


def import_legacy_files(db: Database) -> None:
    """Import once; afterwards only finish renaming worker files a crash left behind."""
    if db.meta(DONE_KEY) is None:
        with db.write() as con:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (DONE_KEY,)).fetchone() is None:
                _import_runs(db)
                _import_workers(db)
                _import_history(db)
                con.execute("INSERT INTO meta (key, value) VALUES (?, 'done')", (DONE_KEY,))
    for path in _worker_files(db.data_dir):
        path.replace(path.with_name(path.name + ".imported"))


def _import_runs(db: Database) -> None:
    from backend.state.accessions import AccessionList, read_csv_runs

    folder = db.data_dir / "ENA_accession_numbers"
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        if not path.stem.isdigit():
            continue
        runs = AccessionList(db, int(path.stem))
        if runs.exists():
            continue  # the list is an export of runs already in the database
        runs.save(read_csv_runs(path))
        log_import("runs of taxon " + path.stem, sum(1 for _ in runs.runs()), path)


def _worker_files(data_dir: Path) -> list[Path]:
    folder = data_dir / "workers"
    return sorted(folder.glob("mf-*.json")) if folder.is_dir() else []


def _import_workers(db: Database) -> None:
    from backend.state.workers import WorkerRecord, WorkerStore

    store = WorkerStore(db)
    for path in _worker_files(db.data_dir):
        record = WorkerRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        if store.get(record.name) is None:
            store.save(record)
            log_import("worker record", 1, path)


def _import_history(db: Database) -> None:
    path = db.data_dir / "history.jsonl"
    files = [path.with_name(f"{path.name}.{i}") for i in range(9, 0, -1)] + [path]
    con = db.connection()
    if con.execute("SELECT 1 FROM history LIMIT 1").fetchone():
        return
    for source in files:
        if not source.is_file():
            continue
        count = 0
        with open(source, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a crashed writer
                con.execute(
                    "INSERT INTO history (time, taxon, field, old, new, actor) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.get("time", ""), entry.get("taxon"), entry.get("field", ""),
                     json.dumps(entry.get("old")), json.dumps(entry.get("new")),
                     entry.get("actor", "")))
                count += 1
        log_import("history entries", count, source)
