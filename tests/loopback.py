"""Real HTTP servers on 127.0.0.1: FASTQ files with switchable faults, and a callback sink."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def fastq_gz(name: str, reads: int = 3000) -> bytes:
    text = "".join(f"@{name}.{i}\nACGTACGTAC\n+\nIIIIIIIIII\n" for i in range(reads))
    return gzip.compress(text.encode(), mtime=0)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (for servers started as separate processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Fault:
    kind: str               # "cut", "stall", "404", "corrupt"
    after: int = 0          # bytes sent before the fault
    times: int = 1          # how many requests it applies to


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        self.files["/" + path.lstrip("/")] = data
        return self.url(path)

    def sent(self, path: str) -> int:
        return sum(r["sent"] for r in self.requests if r["path"] == "/" + path.lstrip("/"))


def _handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            record = {"path": self.path, "range": self.headers.get("Range"), "sent": 0}
            state.requests.append(record)
            data = state.files.get(self.path)
            fault = state.faults.get(self.path)
            if fault and fault.times > 0:
                fault.times -= 1
            else:
                fault = None
            if data is None or (fault and fault.kind == "404"):
                self.send_error(404, "Not Found")
                return
            if fault and fault.kind == "corrupt":
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            if record["range"]:
                start = int(record["range"].split("=")[1].rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault and fault.kind in ("cut", "stall"):
                self.wfile.write(body[:fault.after])
                self.wfile.flush()
                record["sent"] += fault.after
                if fault.kind == "stall":
                    time.sleep(3)
                self.close_connection = True
                return
            self.wfile.write(body)
            record["sent"] += len(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Callbacks:
    received: list[dict] = field(default_factory=list)
    status: int = 200
    port: int = 0


@pytest.fixture
def callback_server() -> Iterator[Callbacks]:
    state = Callbacks()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"path": self.path, "auth": self.headers["Authorization"],
                                   "type": self.headers["Content-Type"],
                                   "json": json.loads(body)})
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()
