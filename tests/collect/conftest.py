"""A lab: settings in a temp folder, a registry with one taxon, and finished local workers."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.compute.local import LocalBackend
from backend.settings import Settings, load_settings
from backend.state.accessions import AccessionList, Run, RunStatus
from backend.state.registry import Registry, Stage, Status, Taxon
from backend.state.workers import (
    Phase,
    WorkerRecord,
    WorkerStore,
    new_token,
    token_hash,
    worker_name,
)
from backend.timeutil import utc_now

TAXON = 562


def fastq_bytes(accession: str, mate: int, size_hint: int = 2000) -> bytes:
    reads = "".join(f"@{accession}.{i}/{mate}\nACGT\n+\nIIII\n" for i in range(size_hint // 20))
    return gzip.compress(reads.encode(), mtime=0)


@dataclass
class Lab:
    settings: Settings
    registry: Registry
    store: WorkerStore
    backend: LocalBackend

    @property
    def accessions(self) -> AccessionList:
        return AccessionList.of(self.settings, TAXON)

    def genomes(self) -> Path:
        return self.settings.data_dir / "genomes" / str(TAXON)

    def add_runs(self, *accessions: str) -> dict[str, dict[str, bytes]]:
        """Pending paired runs in the accession list; returns their file contents."""
        contents: dict[str, dict[str, bytes]] = {}
        with self.accessions.edit() as runs:
            for acc in accessions:
                files = {f"{acc}_{m}.fastq.gz": fastq_bytes(acc, m) for m in (1, 2)}
                contents[acc] = files
                runs[acc] = Run(
                    acc,
                    fastq_files=tuple(f"ftp.sra.ebi.ac.uk/vol1/fastq/{acc[:6]}/{acc}/{n}"
                                      for n in files),
                    fastq_bytes=tuple(len(b) for b in files.values()),
                    fastq_md5=tuple(hashlib.md5(b).hexdigest() for b in files.values()),
                )
        return contents

    def serve_runs(self, file_server: Any, count: int, first: int = 1001
                   ) -> dict[str, dict[str, bytes]]:
        """Pending runs whose files the loopback server serves; the taxon set to dispatch."""
        host = f"127.0.0.1:{file_server.port}"
        contents: dict[str, dict[str, bytes]] = {}
        with self.accessions.edit() as runs:
            for acc in (f"ERR{first + i}" for i in range(count)):
                files = {f"{acc}_{m}.fastq.gz": fastq_bytes(acc, m) for m in (1, 2)}
                for name, data in files.items():
                    file_server.add(f"vol1/fastq/{acc}/{name}", data)
                runs[acc] = Run(acc, fastq_files=tuple(f"{host}/vol1/fastq/{acc}/{n}"
                                                       for n in files),
                                fastq_bytes=tuple(len(d) for d in files.values()),
                                fastq_md5=tuple(hashlib.md5(d).hexdigest()
                                                for d in files.values()))
                contents[acc] = files
        self.registry.update(TAXON, stage=Stage.DISPATCH)
        return contents

    def finished_worker(self, contents: dict[str, dict[str, bytes]], chunk: int = 0,
                        failed: tuple[str, ...] = ()) -> WorkerRecord:
        """A local worker whose runner finished: out/<run>/<file>, manifest, DONE.json."""
        name = worker_name(TAXON, chunk)
        record = WorkerRecord(
            name=name, backend="local", taxon_id=TAXON, chunk=chunk, runs=list(contents),
            bytes=sum(len(b) for f in contents.values() for b in f.values()),
            token_sha256=token_hash(new_token()), created_at=utc_now(), phase=Phase.RUNNING,
            address="127.0.0.1",
        )
        out = self.backend.folder(record) / "out"
        out.mkdir(parents=True)
        rows = ["run\tfile\tbytes\tmd5\tstatus\terror"]
        for acc, files in contents.items():
            for file_name, data in files.items():
                md5 = hashlib.md5(data).hexdigest()
                if acc in failed:
                    rows.append(f"{acc}\t{file_name}\t{len(data)}\t{md5}\tfailed\tHTTP 404")
                    continue
                (out / acc).mkdir(parents=True, exist_ok=True)
                (out / acc / file_name).write_bytes(data)
                rows.append(f"{acc}\t{file_name}\t{len(data)}\t{md5}\tok\t")
        (out / "manifest.tsv").write_text("\n".join(rows) + "\n")
        (out / "DONE.json").write_text(json.dumps({
            "status": "done", "runs_ok": len(contents) - len(failed),
            "runs_failed": len(failed), "bytes": record.bytes,
            "finished_at": "2026-11-23T10:00:00Z",
        }))
        self.store.create(record)
        with self.accessions.edit() as runs:
            for acc in contents:
                runs[acc].status, runs[acc].worker = RunStatus.ASSIGNED, name
                runs[acc].droplet_ip = "127.0.0.1"
        self.registry.update(TAXON, stage=Stage.WAIT, last_run_status=Status.IN_PROGRESS,
                             droplet_ips=("127.0.0.1",))
        return record


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    settings = load_settings({
        "MICROFETCH_CSV": str(tmp_path / "microfetch.csv"),
        "MICROFETCH_DATA_DIR": str(tmp_path / "data"),
        "MICROFETCH_RSYNC_TIMEOUT": "30",
    })
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    with registry.transaction("test") as table:
        table[TAXON] = Taxon(TAXON, "Escherichia coli")
    lab = Lab(settings, registry, WorkerStore.of(settings), LocalBackend(settings))
    yield lab
    local = LocalBackend(settings)  # only local runners: other backends' tests clean up theirs
    for record in lab.store.live():  # no runner outlives its test (they back off for minutes)
        if record.backend == "local":
            local.destroy(record)
