"""The fetcher over FTP against a real pyftpdlib server on 127.0.0.1: fetch and REST resume."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_run import Expected, fetch_file
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from .conftest import fastq_gz, md5


@pytest.fixture
def ftp_root(tmp_path: Path) -> Iterator[tuple[Path, int, list[str]]]:
    root = tmp_path / "ftp"
    (root / "vol1").mkdir(parents=True)
    commands: list[str] = []
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(root))

    class Handler(FTPHandler):
        def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
            commands.append(line)
            super().pre_process_command(line, cmd, arg)

    Handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2},
                              daemon=True)
    thread.start()
    yield root, server.address[1], commands
    server.close_all()


def test_a_file_is_fetched_over_ftp_and_verified(ftp_root, tmp_path):
    root, port, _ = ftp_root
    data = fastq_gz("ERR11_1")
    (root / "vol1" / "ERR11_1.fastq.gz").write_bytes(data)
    url = f"ftp://127.0.0.1:{port}/vol1/ERR11_1.fastq.gz"
    result = fetch_file("ERR11", Expected(url, md5(data), len(data)), tmp_path / "out",
                        backoff=0, timeout=5)
    assert result.ok, result.error
    assert (tmp_path / "out" / "ERR11_1.fastq.gz").read_bytes() == data


def test_a_partial_ftp_download_is_resumed_with_rest(ftp_root, tmp_path):
    root, port, commands = ftp_root
    data = fastq_gz("ERR12_1", reads=20000)
    (root / "vol1" / "ERR12_1.fastq.gz").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ERR12_1.fastq.gz.part").write_bytes(data[:5000])
    url = f"ftp://127.0.0.1:{port}/vol1/ERR12_1.fastq.gz"
    result = fetch_file("ERR12", Expected(url, md5(data), len(data)), out, backoff=0, timeout=5)
    assert result.ok, result.error
    assert "REST 5000" in commands
    assert result.fetched_bytes == len(data) - 5000


def test_a_missing_ftp_file_is_a_permanent_error(ftp_root, tmp_path):
    _, port, commands = ftp_root
    url = f"ftp://127.0.0.1:{port}/vol1/missing.fastq.gz"
    result = fetch_file("ERR13", Expected(url, "0" * 32, 10), tmp_path, retries=3, backoff=0,
                        timeout=5)
    assert not result.ok and "550" in result.error
    assert sum(1 for c in commands if c.startswith("RETR")) == 1
