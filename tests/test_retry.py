"""The one retry policy: what is retried, the waits, the bounds (HTTP with `responses`, SSH
against a real refused port and a real sshd on 127.0.0.1)."""

from __future__ import annotations

import getpass
import socket
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import paramiko
import pytest
import requests
import responses

from backend.compute import remote
from backend.errors import OperationError
from backend.retry import (
    MAX_WAIT,
    GaveUp,
    RetryableAnswer,
    RetryPolicy,
    http_policy,
    reset_seconds,
    retry_after_seconds,
    ssh_policy,
    transient_http,
    transient_ssh,
)
from tests.loopback import free_port
from tests.sshd import keygen, make_sshd

URL = "https://api.example.org/thing"
NOW = 1_700_000_000.0
KEY = paramiko.RSAKey.generate(1024)


def answer(status: int, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response.url = status, URL
    response.headers.update(headers)
    return response


# Reading the headers ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("7", 7.0),
    (" 12 ", 12.0),
    ("1.5", 1.5),
    ("-5", -5.0),  # read as written; the policy makes it 0
    (format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True), 90.0),
    (format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True), -90.0),
    ("soon", None),
    ("", None),
    ("nan", None),
    ("inf", None),
    ("-inf", None),
    ("Mon, 99 Foo 2024 25:61:61 GMT", None),
])
def test_retry_after_is_seconds_or_an_http_date_and_anything_else_is_unreadable(text, seconds):
    assert retry_after_seconds(text, NOW) == seconds


def test_ratelimit_reset_is_a_unix_time():
    assert reset_seconds(str(int(NOW + 42)), NOW) == 42.0
    assert reset_seconds(str(int(NOW - 42)), NOW) == -42.0
    assert reset_seconds("tomorrow", NOW) is None
    assert reset_seconds("nan", NOW) is None


@pytest.mark.parametrize(("headers", "waited"), [
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": "-5"}, 0.0),                       # a time already past: now
    ({"Retry-After": "86400"}, MAX_WAIT),               # absurd: capped
    ({"Retry-After": "1e308"}, MAX_WAIT),
    ({"Retry-After": "soon"}, MAX_WAIT / 4),            # unreadable: a bounded guess
    ({"Retry-After": "nan"}, MAX_WAIT / 4),
    ({"ratelimit-reset": str(int(NOW + 30))}, 30.0),
    ({"ratelimit-reset": str(int(NOW - 30))}, 0.0),
    ({"ratelimit-reset": str(int(NOW + 10**9))}, MAX_WAIT),
    ({"ratelimit-reset": "soon"}, MAX_WAIT / 4),
    ({"ratelimit-reset": str(int(NOW + 30)), "Retry-After": "3"}, 30.0),  # the reset wins
    ({}, None),                                          # nothing asked: the backoff applies
])
def test_the_wait_a_429_asks_for_is_validated_and_bounded(headers, waited):
    assert http_policy(3).asked_wait(429, headers, NOW) == waited


def test_ratelimit_reset_counts_on_a_429_only_and_retry_after_on_any_retried_answer():
    policy = http_policy(3)
    assert policy.asked_wait(503, {"ratelimit-reset": str(int(NOW + 30))}, NOW) is None
    assert policy.asked_wait(503, {"Retry-After": "9"}, NOW) == 9.0


def test_a_smaller_cap_bounds_every_asked_wait():
    policy = http_policy(3, max_wait=10.0)
    assert policy.asked_wait(429, {"Retry-After": "60"}, NOW) == 10.0
    assert policy.asked_wait(429, {"Retry-After": "soon"}, NOW) == 2.5


# The backoff -----------------------------------------------------------------------------


def test_the_backoff_doubles_up_to_its_cap():
    policy = RetryPolicy(attempts=20, base=1.0, max_backoff=10.0)
    assert [policy.backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.backoff(10_000) == 10.0  # no overflow for a huge attempt number


def test_jitter_adds_at_most_its_fraction_and_never_to_an_asked_wait():
    policy = RetryPolicy(attempts=5, base=2.0, jitter=0.25)
    assert policy.backoff(0, rand=lambda: 0.0) == 2.0
    assert policy.backoff(0, rand=lambda: 0.999) == pytest.approx(2.5, abs=0.01)
    assert all(2.0 <= policy.backoff(0) < 2.5 for _ in range(200))
    assert policy.wait(0, asked=7.0) == 7.0


@pytest.mark.parametrize("fields", [
    {"attempts": 0}, {"attempts": None}, {"attempts": 3, "base": -1.0},
    {"attempts": 3, "base": 5.0, "max_backoff": 1.0}, {"attempts": 3, "jitter": 1.5},
    {"attempts": 3, "max_wait": -1.0}, {"attempts": 3, "deadline": -1.0},
])
def test_a_policy_that_makes_no_sense_is_refused(fields):
    with pytest.raises(ValueError):
        RetryPolicy(**fields)


def test_the_policy_is_frozen():
    with pytest.raises(AttributeError):
        http_policy(3).attempts = 10  # type: ignore[misc]


# What is retried: HTTP -------------------------------------------------------------------


def fetch(policy: RetryPolicy, sleeps: list[float]) -> requests.Response:
    return policy.call(lambda: policy.check(requests.get(URL, timeout=5), now=NOW),
                       sleep=sleeps.append)


@responses.activate
@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_retried(status):
    responses.get(URL, status=status)
    responses.get(URL, body="ok")
    sleeps: list[float] = []
    assert fetch(http_policy(3), sleeps).text == "ok"
    assert sleeps == [1.0]
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_any_other_status_is_the_callers_answer_at_once(status):
    responses.get(URL, status=status)
    sleeps: list[float] = []
    assert fetch(http_policy(3), sleeps).status_code == status
    assert sleeps == [] and len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("error", [requests.ConnectionError("refused"),
                                   requests.ConnectTimeout("slow"), requests.ReadTimeout("slow"),
                                   requests.exceptions.ChunkedEncodingError("cut")])
def test_network_errors_are_retried(error):
    responses.get(URL, body=error)
    responses.get(URL, body="ok")
    sleeps: list[float] = []
    assert fetch(http_policy(3), sleeps).text == "ok"
    assert len(responses.calls) == 2


@responses.activate
def test_tries_are_bounded_and_the_last_failure_is_reported():
    responses.get(URL, status=503)
    sleeps: list[float] = []
    with pytest.raises(GaveUp) as gave_up:
        fetch(http_policy(3), sleeps)
    assert gave_up.value.tries == 4 and gave_up.value.last == "HTTP 503"
    assert len(responses.calls) == 4
    assert sleeps == [1.0, 2.0, 4.0]  # no wait after the last try


@responses.activate
def test_the_wait_a_retried_answer_asks_for_replaces_the_backoff():
    responses.get(URL, status=429, headers={"Retry-After": "86400"})
    responses.get(URL, status=503, headers={"Retry-After": "soon"})
    responses.get(URL, status=503)
    responses.get(URL, body="ok")
    sleeps: list[float] = []
    assert fetch(http_policy(5), sleeps).text == "ok"
    assert sleeps == [MAX_WAIT, MAX_WAIT / 4, 4.0]


def test_other_exceptions_are_never_retried():
    tries: list[int] = []

    def broken() -> None:
        tries.append(1)
        raise ValueError("a bug, not the network")

    with pytest.raises(ValueError):
        http_policy(5).call(broken, sleep=lambda s: None)
    assert len(tries) == 1
    assert not transient_http(ValueError())
    assert transient_http(RetryableAnswer(answer(503), None))


def test_a_deadline_stops_the_tries_before_a_wait_would_pass_it():
    now = [0.0]
    policy = RetryPolicy(attempts=None, base=1.0, max_backoff=100.0, deadline=10.0)

    def refused() -> None:
        raise requests.ConnectionError("refused")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(GaveUp) as gave_up:
        policy.call(refused, sleep=sleep, clock=lambda: now[0])
    assert now[0] == 7.0  # 1 + 2 + 4; waiting 8 more would end at 15 > 10
    assert gave_up.value.tries == 4


# What is retried: SSH --------------------------------------------------------------------


def refused_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connecting is refused at once."""
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def target(port: int, host_key: str, key_path: Path) -> remote.SshTarget:
    return remote.SshTarget(getpass.getuser(), "127.0.0.1", port, key_path, host_key)


def test_a_refused_port_is_retried_until_the_deadline():
    port = refused_port()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError) as refused:
        sock.connect(("127.0.0.1", port))
    assert transient_ssh(refused.value)
    tries: list[float] = []

    def attempt() -> None:
        tries.append(time.monotonic())
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass

    started = time.monotonic()
    with pytest.raises(GaveUp) as gave_up:
        ssh_policy(1.5).call(attempt)
    assert time.monotonic() - started < 1.5
    assert len(tries) == gave_up.value.tries >= 2
    assert "ConnectionRefusedError" in gave_up.value.last


def test_ssh_connect_to_a_refused_port_gives_up_after_its_boot_seconds(tmp_path):
    sshd = make_sshd(tmp_path / "never")  # made, never started: its port refuses
    started = time.monotonic()
    with pytest.raises(OperationError, match=r"cannot reach .* within 2 s") as caught:
        remote.connect(target(sshd.port, sshd.host_key, sshd.user_key), 1, 2)
    assert 1.0 <= time.monotonic() - started < 3.0  # it did try again, and stopped in time
    assert not caught.value.permanent


def test_a_silent_listener_is_a_banner_error_and_is_retried(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])  # and say nothing: no banner
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        host_key = keygen(tmp_path / "host")
        with pytest.raises(OperationError, match=r"cannot reach .* within 2 s"):
            remote.connect(target(port, host_key, tmp_path / "host"), 0.5, 2)
        assert len(accepted) >= 2  # tried again after the first banner timeout
    finally:
        listener.close()
        for sock in accepted:
            sock.close()


def test_a_refused_key_fails_at_once_and_is_not_retried(tmp_path):
    sshd = make_sshd(tmp_path / "sshd")
    sshd.start()
    try:
        stranger = tmp_path / "stranger"
        keygen(stranger)  # a key the host does not authorise
        started = time.monotonic()
        with pytest.raises(OperationError, match="refused the key") as caught:
            remote.connect(target(sshd.port, sshd.host_key, stranger), 5, 60)
        assert time.monotonic() - started < 10  # not the 60 s of a booting host
        assert "nothing was uploaded" in str(caught.value)
    finally:
        sshd.stop()


@pytest.mark.parametrize(("error", "retried"), [
    (paramiko.ssh_exception.NoValidConnectionsError(
        {("127.0.0.1", 22): ConnectionRefusedError(111, "refused")}), True),
    (ConnectionResetError(104, "reset"), True),
    (TimeoutError("timed out"), True),
    (EOFError(), True),
    (OSError(113, "No route to host"), True),
    (paramiko.SSHException("Error reading SSH protocol banner"), True),
    (paramiko.SSHException("No existing session"), True),
    (paramiko.AuthenticationException("Authentication failed."), False),
    (paramiko.BadHostKeyException("h", KEY, KEY), False),
    (paramiko.SSHException("not a valid OPENSSH private key file"), False),
    (FileNotFoundError(2, "No such file"), False),
    (PermissionError(13, "Permission denied"), False),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
])
def test_which_ssh_failures_are_retried(error, retried):
    assert transient_ssh(error) is retried
