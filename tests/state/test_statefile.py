"""The one atomic-write helper: modes, and a file created once by whoever is first."""

from __future__ import annotations

import stat
import threading

from backend.compute.base import Chunk, prepare_folder
from backend.state.statefile import atomic_write_text, create_once


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_written_0600_and_a_rewrite_keeps_the_files_mode(tmp_path):
    secret = tmp_path / "token"
    atomic_write_text(secret, "s3cret", mode=0o600)
    assert mode(secret) == 0o600 and secret.read_text() == "s3cret"
    atomic_write_text(secret, "again")
    assert mode(secret) == 0o600 and secret.read_text() == "again"
    plain = tmp_path / "plain"
    atomic_write_text(plain, "x")
    assert mode(plain) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "token"]  # no temp files


def test_a_file_is_created_once_and_the_first_writer_wins(tmp_path):
    path = tmp_path / "sub" / "install_id"
    results: list[bool] = []
    threads = [threading.Thread(target=lambda n=n: results.append(create_once(path, f"{n}\n")))
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert path.read_text().strip() in {str(n) for n in range(8)}
    assert create_once(path, "later\n") is False and path.read_text() != "later\n"
    assert [p.name for p in path.parent.iterdir()] == ["install_id"]  # no temp files


def test_a_worker_folders_token_is_0600(tmp_path):
    folder = prepare_folder(tmp_path / "w", Chunk(562, 0, ()), "tok", "http://home/",
                            tmp_path / "no-pipeline")
    token = folder / "token"
    assert token.read_text() == "tok" and mode(token) == 0o600
