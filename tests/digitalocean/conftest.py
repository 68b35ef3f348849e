"""The lab of the collection tests, reused with the digitalocean backend; and the stand-in."""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.compute.do_api import DoApi
from backend.demo.do_standin import Cloud, DoStandIn
from tests.collect.conftest import lab  # noqa: F401 - the lab fixture
from tests.sshd import keygen


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[DoStandIn]:
    """The stand-in cloud with a small page size (so listing pages) and quick activation."""
    cloud = Cloud(activation_seconds=0.2, folder=tmp_path / "cloud")
    server = DoStandIn(cloud, max_per_page=2).start()
    yield server
    server.stop()


@pytest.fixture
def user_key(tmp_path: Path, standin: DoStandIn) -> tuple[Path, int]:
    """A login key registered with the stand-in's account: (private key file, key id)."""
    public = keygen(tmp_path / "user_ed25519")
    return tmp_path / "user_ed25519", standin.cloud.add_ssh_key(public)["id"]


@pytest.fixture
def api(standin: DoStandIn) -> DoApi:
    return DoApi(standin.cloud.token, 5, sleep=lambda s: None, retries=0,
                 base_url=standin.api_url)


@pytest.fixture
def as_root() -> None:
    if getpass.getuser() != "root":
        raise AssertionError("the stand-in's droplets are sshds on port 22: run as root")


def wait_for(predicate: Callable[[], bool], seconds: float = 30, what: str = "") -> None:
    """Poll until ``predicate`` holds; bounded, so a broken stand-in fails instead of hanging."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or predicate}")
        time.sleep(0.05)
