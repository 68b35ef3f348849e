"""Fixtures for the worker side: the pipeline's bin/ on sys.path; servers from tests.loopback.

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
from pathlib import Path

import pytest

from tests.loopback import Fault, FileServer, _handler, fastq_gz, md5

BIN = Path(__file__).resolve().parents[2] / "nextflow" / "bin"
sys.path.insert(0, str(BIN))

HOLD_SECONDS = 60  # a held connection is released by the test, or closed after this bound

__all__ = ["BIN", "Fault", "fastq_gz", "find_python", "md5"]


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
