"""A lab running the real `microfetch serve` against the ENA stand-in on the local backend."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.demo.ena_standin import EnaData, EnaStandIn, make_run
from tests.conftest import cli_env
from tests.loopback import free_port


@dataclass
class Daemon:
    tmp: Path
    env: dict[str, str]
    ena: EnaStandIn
    proc: subprocess.Popen | None = None

    def cli(self, *args: str, add_taxa: bool = False) -> subprocess.CompletedProcess[str]:
        name = "add_taxa_main" if add_taxa else "main"
        code = f"import sys; from backend.cli.main import {name} as m; sys.exit(m())"
        return subprocess.run([sys.executable, "-c", code, *args], env=self.env,
                              capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        log = open(self.tmp / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from backend.cli.main import main; "
             "sys.exit(main(['serve']))"], env=self.env, stdout=log, stderr=log)
        log.close()

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def rows(self) -> dict[int, dict]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return {r["taxonomy_id"]: r for r in json.loads(result.stdout)}

    def wait_until(self, predicate, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.proc is None or self.proc.poll() is None, self.log()
            time.sleep(0.5)
        raise AssertionError(f"timed out; serve log:\n{self.log()[-4000:]}")

    def all_complete(self, *taxa: int) -> bool:
        rows = self.rows()
        return all(rows[t]["last_run_status"] == "complete" and not rows[t]["droplet_ips"]
                   for t in taxa)

    def log(self) -> str:
        path = self.tmp / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def genomes(self) -> dict[str, str]:
        """Every fetched file, relative path -> MD5."""
        root = self.tmp / "data" / "genomes"
        return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.fastq.gz"))}

    def expected(self, *taxa: int) -> dict[str, str]:
        """What should be home: the wanted runs' files with ENA's MD5s."""
        files = {}
        for taxon in taxa:
            for row in self.ena.data.rows[taxon]:
                if row["instrument_platform"] != "ILLUMINA":
                    continue
                pairs = zip(row["fastq_ftp"].split(";"), row["fastq_md5"].split(";"), strict=True)
                for path, md5 in pairs:
                    name = path.rsplit("/", 1)[1]
                    if row["fastq_ftp"].count(";") == 2 and not name.endswith(
                            ("_1.fastq.gz", "_2.fastq.gz")):
                        continue  # a paired run's unpaired third file is not wanted
                    files[f"{taxon}/{row['run_accession']}/{name}"] = md5
        return files

    def file_downloads(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.ena.requests:
            if request["path"].startswith("/vol1/") and not request["range"]:
                counts[request["path"]] = counts.get(request["path"], 0) + 1
        return counts


def runner_processes(tmp: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if (b"run_chunk.py" in cmdline or b"supervise.py" in cmdline) \
                    and str(tmp).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    data = EnaData()
    data.names.update({562: "Escherichia coli", 1280: "Staphylococcus aureus"})
    for i in range(1, 5):
        make_run(data, 562, f"ERR{5620000 + i}", reads=400)
    for i in range(1, 3):
        make_run(data, 1280, f"SRR{12800000 + i}", files=3, reads=400)
    make_run(data, 1280, "SRR12809999", platform="PACBIO_SMRT", files=1)
    ena = EnaStandIn(data).start()
    env = cli_env(tmp_path, **ena.settings_env(),
                  MICROFETCH_BIND=f"127.0.0.1:{free_port()}",
                  MICROFETCH_HEARTBEAT_SECONDS="1", MICROFETCH_COLLECT_SECONDS="1",
                  MICROFETCH_RECONCILE_SECONDS="2", MICROFETCH_RECHECK_HOURS="24",
                  MICROFETCH_CHUNK_MAX_RUNS="2", MICROFETCH_MAX_WORKERS="2",
                  MICROFETCH_ENA_RETRIES="1", MICROFETCH_SHUTDOWN_GRACE_SECONDS="10",
                  MICROFETCH_ORPHAN_GRACE_SECONDS="5")
    lab = Daemon(tmp_path, env, ena)
    yield lab
    if lab.proc and lab.proc.poll() is None:
        lab.proc.kill()
        lab.proc.wait(timeout=30)
    for pid in runner_processes(tmp_path):
        os.kill(pid, signal.SIGKILL)
    ena.stop()
