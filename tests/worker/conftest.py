"""Fixtures for the worker side: the pipeline's bin/ on sys.path; servers from tests.loopback;
reads simulated once per session for the assembly tests (``sample``, ``noise``).

The file server here is the one of ``tests.loopback`` with two more faults: an HTTP status
(``Fault("503", times=4)`` answers 503 four times) and ``hold`` (send ``after`` bytes, then
keep the connection open until the test releases it), which lets a test kill a runner in the
middle of a file at a known size without any timing.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.loopback import Fault, FileServer, _handler, fastq_gz, md5

from .simulate import random_genome, random_reads, simulate_pairs, write_fasta

BIN = Path(__file__).resolve().parents[2] / "nextflow" / "bin"
sys.path.insert(0, str(BIN))

HOLD_SECONDS = 60  # a held connection is released by the test, or closed after this bound

__all__ = ["BIN", "GENOME_LENGTH", "Fault", "Sample", "fastq_gz", "find_python", "md5"]

GENOME_LENGTH = 50_000
ASSEMBLY_TOOLS = ("fastp", "skesa", "art_illumina")


@dataclass(frozen=True)
class Sample:
    genome: str
    reads: list[Path]


@pytest.fixture(scope="session")
def tools() -> None:
    missing = [tool for tool in ASSEMBLY_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not on PATH: scripts/test.sh installs them "
                    "(Debian: fastp skesa art-nextgen-simulation-tools)")


@pytest.fixture(scope="session")
def sample(tools, tmp_path_factory) -> Sample:
    """A 50 kb random genome and 2x150 reads at 30x from it, made once per session."""
    folder = tmp_path_factory.mktemp("sample")
    genome = random_genome(GENOME_LENGTH, seed=1)
    fasta = write_fasta(folder / "genome.fa", "genome", genome)
    return Sample(genome, simulate_pairs(fasta, folder, "ERR900001", depth=30, length=150))


@pytest.fixture(scope="session")
def noise(tools, tmp_path_factory) -> list[Path]:
    """As many reads as the sample, but of random bases."""
    return random_reads(tmp_path_factory.mktemp("noise"), "ERR900002", pairs=5000)


class HeldFileServer(FileServer):
    """The loopback file server, plus an event that releases connections held by ``hold``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()


def _faulty_handler(state: HeldFileServer) -> type[http.server.BaseHTTPRequestHandler]:
    base = _handler(state)

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:
            fault = state.faults.get(self.path)
            if not fault or fault.times <= 0 or not (fault.kind.isdigit() or
                                                     fault.kind == "hold"):
                super().do_GET()
                return
            fault.times -= 1
            record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
            state.requests.append(record)
            if fault.kind.isdigit():
                self.send_error(int(fault.kind))
                return
            data = state.files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:fault.after])
            self.wfile.flush()
            record["sent"] = fault.after
            state.release.wait(HOLD_SECONDS)
            self.close_connection = True

    return Handler


@pytest.fixture
def file_server() -> Iterator[HeldFileServer]:
    state = HeldFileServer()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _faulty_handler(state))
    server.daemon_threads = True
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def find_python(major: int, minor: int) -> str | None:
    """An interpreter of exactly this version: on PATH, or one pyenv installed."""
    names = [f"python{major}.{minor}"]
    candidates = [shutil.which(name) for name in names]
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(f"{major}.{minor}.*"))]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if out.strip() == f"({major}, {minor})":
            return candidate
    return None
