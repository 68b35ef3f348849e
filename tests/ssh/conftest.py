"""A running sshd, and a lab whose backend is `ssh` pointing at it."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.compute.ssh import SshBackend
from tests.collect.conftest import Lab, lab  # noqa: F401 - the lab fixture, reused
from tests.sshd import Sshd, make_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = make_sshd(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ssh_lab(lab: Lab, sshd: Sshd, tmp_path: Path) -> Lab:  # noqa: F811
    settings = lab.settings.with_overrides(
        backend="ssh", ssh_hosts=(f"{getpass.getuser()}@127.0.0.1:{sshd.port}",),
        ssh_key=sshd.user_key, ssh_known_hosts=sshd.known_hosts,
        ssh_remote_dir=str(tmp_path / "remote"), ssh_connect_timeout=5, ssh_boot_seconds=10,
        fastq_scheme="http", callback_url="")
    lab.settings = settings
    lab.backend = SshBackend(settings)
    return lab
