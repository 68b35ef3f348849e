"""The fetcher against a real loopback HTTP server: resume, verification, timeouts."""

from __future__ import annotations

import subprocess
import sys

from fetch_run import Backoff, Expected, FetchError, expected_files, fetch_file, open_stream

from .conftest import BIN, Fault, fastq_gz, md5

NO_WAIT = {"backoff": 0.0, "timeout": 1.0}


def test_a_run_is_fetched_and_verified_through_the_cli(file_server, tmp_path):
    one, two = fastq_gz("ERR1_1"), fastq_gz("ERR1_2")
    urls = [file_server.add("vol1/ERR1_1.fastq.gz", one),
            file_server.add("vol1/ERR1_2.fastq.gz", two)]
    result = subprocess.run(
        [sys.executable, str(BIN / "fetch_run.py"), "--run", "ERR1", "--urls", ";".join(urls),
         "--md5s", f"{md5(one)};{md5(two)}", "--bytes", f"{len(one)};{len(two)}",
         "--outdir", str(tmp_path / "ERR1")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ERR1" / "ERR1_1.fastq.gz").read_bytes() == one
    assert (tmp_path / "ERR1" / "ERR1_2.fastq.gz").read_bytes() == two
    assert not list(tmp_path.rglob("*.part"))


def test_a_cut_connection_is_resumed_without_fetching_received_bytes_again(file_server,
                                                                             tmp_path):
    data = fastq_gz("ERR2_1", reads=20000)
    url = file_server.add("ERR2_1.fastq.gz", data)
    cut = len(data) // 3
    file_server.faults["/ERR2_1.fastq.gz"] = Fault("cut", after=cut)
    result = fetch_file("ERR2", Expected(url, md5(data), len(data)), tmp_path, **NO_WAIT)
    assert result.ok, result.error
    first, second = file_server.requests
    assert first["range"] is None
    kept = int(second["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < kept <= cut  # the resume starts where the received bytes end
    assert second["sent"] == len(data) - kept  # so nothing received is fetched again
    assert (tmp_path / "ERR2_1.fastq.gz").read_bytes() == data


def test_a_partial_file_left_by_an_earlier_crash_is_resumed(file_server, tmp_path):
    data = fastq_gz("ERR3_1")
    url = file_server.add("ERR3_1.fastq.gz", data)
    (tmp_path / "ERR3_1.fastq.gz.part").write_bytes(data[:1000])
    result = fetch_file("ERR3", Expected(url, md5(data), len(data)), tmp_path, **NO_WAIT)
    assert result.ok
    assert file_server.requests[0]["range"] == "bytes=1000-"
    assert result.fetched_bytes == len(data) - 1000


def test_an_md5_mismatch_is_not_accepted_and_says_what_differs(file_server, tmp_path):
    data = fastq_gz("ERR4_1")
    url = file_server.add("ERR4_1.fastq.gz", data)
    file_server.faults["/ERR4_1.fastq.gz"] = Fault("corrupt", times=10)
    result = fetch_file("ERR4", Expected(url, md5(data), len(data)), tmp_path, retries=1,
                        **NO_WAIT)
    assert not result.ok
    assert f"expected {md5(data)}" in result.error
    assert "ERR4_1.fastq.gz: MD5" in result.error
    assert not (tmp_path / "ERR4_1.fastq.gz").exists()
    assert not (tmp_path / "ERR4_1.fastq.gz.part").exists()


def test_a_size_mismatch_is_not_accepted(file_server, tmp_path):
    data = fastq_gz("ERR5_1")
    url = file_server.add("ERR5_1.fastq.gz", data)
    result = fetch_file("ERR5", Expected(url, md5(data), len(data) + 7), tmp_path, retries=0,
                        **NO_WAIT)
    assert not result.ok
    assert f"size {len(data)} bytes, expected {len(data) + 7}" in result.error
    assert not (tmp_path / "ERR5_1.fastq.gz").exists()


def test_a_404_is_a_clean_error_and_is_not_retried(file_server, tmp_path):
    url = file_server.url("missing.fastq.gz")
    result = fetch_file("ERR6", Expected(url, "0" * 32, 10), tmp_path, retries=3, **NO_WAIT)
    assert not result.ok
    assert "HTTP 404" in result.error and url in result.error
    assert len(file_server.requests) == 1


class FakeClock:
    """Time that passes only when the fetcher waits, so budgets are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def test_a_server_that_stalls_without_progress_is_given_up_once_the_budget_is_spent(
        file_server, tmp_path):
    data = fastq_gz("ERR7_1")
    url = file_server.add("ERR7_1.fastq.gz", data)
    file_server.faults["/ERR7_1.fastq.gz"] = Fault("stall", after=0, times=10)
    clock = FakeClock()
    result = fetch_file("ERR7", Expected(url, md5(data), len(data)), tmp_path, retries=2,
                        backoff=1.0, timeout=0.5, transient_budget=3.0, sleep=clock.sleep,
                        clock=clock)
    assert not result.ok
    assert result.cause == "transient"
    assert "timed out" in result.error and "no progress for 3 s" in result.error
    assert clock.waits == [1.0, 2.0]  # exponential backoff until the next wait overdraws
    assert len(file_server.requests) == 3
    assert "after 3 attempts" in result.error and result.attempts == 3


def test_backoff_waits_are_capped_and_progress_renews_the_budget(file_server, tmp_path):
    data = fastq_gz("ERR7_2", reads=20000)
    url = file_server.add("ERR7_2.fastq.gz", data)
    # six cuts, each after some bytes: the host is slow but alive, so it is never given up
    file_server.faults["/ERR7_2.fastq.gz"] = Fault("cut", after=5000, times=6)
    clock = FakeClock()
    result = fetch_file("ERR7", Expected(url, md5(data), len(data)), tmp_path, backoff=4.0,
                        max_wait=5.0, transient_budget=5.0, sleep=clock.sleep, clock=clock)
    assert result.ok, result.error
    assert clock.waits == [4.0] * 6  # each cut made progress: the backoff starts again
    assert result.attempts == 7


def test_a_stall_then_recovery_resumes_the_file(file_server, tmp_path):
    data = fastq_gz("ERR8_1")
    url = file_server.add("ERR8_1.fastq.gz", data)
    file_server.faults["/ERR8_1.fastq.gz"] = Fault("stall", after=500, times=1)
    result = fetch_file("ERR8", Expected(url, md5(data), len(data)), tmp_path, retries=2,
                        backoff=0.0, timeout=0.5)
    assert result.ok
    assert file_server.requests[1]["range"] == "bytes=500-"


def test_a_three_file_run_fetches_each_file_with_its_own_md5_and_size(file_server, tmp_path):
    files = {name: fastq_gz(name) for name in ("ERR9.fastq.gz", "ERR9_1.fastq.gz",
                                                "ERR9_2.fastq.gz")}
    urls = ";".join(file_server.add(name, data) for name, data in files.items())
    wants = expected_files(urls, ";".join(md5(d) for d in files.values()),
                           ";".join(str(len(d)) for d in files.values()) + ";")
    results = [fetch_file("ERR9", want, tmp_path, **NO_WAIT) for want in wants]
    assert [r.ok for r in results] == [True, True, True]
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data


def test_a_file_already_present_with_the_right_md5_is_not_fetched_again(file_server, tmp_path):
    data = fastq_gz("ERR10_1")
    url = file_server.add("ERR10_1.fastq.gz", data)
    (tmp_path / "ERR10_1.fastq.gz").write_bytes(data)
    result = fetch_file("ERR10", Expected(url, md5(data), len(data)), tmp_path, **NO_WAIT)
    assert result.ok
    assert file_server.requests == []


def test_lists_that_do_not_pair_up_are_refused():
    try:
        expected_files("http://x/a;http://x/b", "m1", "1;2")
    except FetchError as exc:
        assert "do not pair up" in str(exc)
    else:
        raise AssertionError("mismatched lists were accepted")


def test_an_unsupported_scheme_is_a_permanent_error():
    try:
        open_stream("gopher://host/file", 0, 1)
    except FetchError as exc:
        assert exc.permanent and "not http, https or ftp" in str(exc)
    else:
        raise AssertionError("gopher was accepted")


def test_an_outage_is_waited_out_with_doubling_capped_waits_for_the_whole_budget():
    clock = FakeClock()
    waits = Backoff(first=2.0, cap=60.0, budget=600.0, clock=clock)
    for _ in range(100):
        wait = waits.next_wait(progressed=False)
        if wait is None:
            break
        clock.sleep(wait)
    assert clock.waits[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert set(clock.waits[6:]) == {60.0}
    assert sum(clock.waits) <= 600.0 < sum(clock.waits) + 60.0  # given up once it would overrun
