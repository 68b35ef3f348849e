"""Workers on a real sshd: pinned keys, upload, detached runner, rsync home, destroy."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backend.collection.collect import Collector
from backend.compute import remote
from backend.compute.transfer import rsync_pull_argv
from backend.errors import OperationError
from backend.jobs.dispatch import Dispatcher
from backend.state.accessions import RunStatus
from backend.state.workers import Phase
from backend.timeutil import utc_now
from tests.loopback import md5
from tests.sshd import keygen, make_sshd

from ..collect.conftest import TAXON


def target_of(sshd, host_key: str | None = None) -> remote.SshTarget:
    import getpass

    return remote.SshTarget(getpass.getuser(), "127.0.0.1", sshd.port, sshd.user_key,
                            host_key or sshd.host_key)


def test_the_rsync_ssh_command_pins_the_key_and_never_prompts(tmp_path):
    target = remote.SshTarget("lab", "10.1.2.3", 2222, Path("/keys/id"), "ssh-ed25519 AAAA")
    rsh = remote.rsync_rsh(target, tmp_path / "kh", 15)
    assert rsh[:5] == ["ssh", "-i", "/keys/id", "-p", "2222"]
    for option in (f"UserKnownHostsFile={tmp_path / 'kh'}", "StrictHostKeyChecking=yes",
                   "BatchMode=yes", "GlobalKnownHostsFile=/dev/null", "ConnectTimeout=15"):
        assert option in rsh
    assert target.known_hosts_line() == "[10.1.2.3]:2222 ssh-ed25519 AAAA"
    assert remote.parse_host("lab@server:2222") == ("lab", "server", 2222)
    with pytest.raises(ValueError, match="user@host"):
        remote.parse_host("server")


def test_a_pinned_host_is_reached_and_a_changed_key_is_refused_before_any_upload(sshd,
                                                                               tmp_path):
    client = remote.connect(target_of(sshd), 5, 5)
    assert remote.run(client, "echo hello").strip() == "hello"
    client.close()
    other = keygen(tmp_path / "other")
    with pytest.raises(OperationError, match=r"host key of .* changed") as caught:
        remote.connect(target_of(sshd, other), 5, 5)
    assert caught.value.permanent
    assert "Nothing was uploaded" in str(caught.value)


def test_an_unpinned_host_is_refused_by_the_backend_with_what_to_do(ssh_lab, tmp_path):
    from backend.compute.ssh import startup_problems

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    problems = startup_problems(ssh_lab.settings.with_overrides(ssh_known_hosts=empty))
    assert any("has no pinned key" in p and "ssh-keyscan" in p for p in problems)


def test_a_host_that_is_down_at_first_is_reached_once_it_answers(tmp_path):
    late = make_sshd(tmp_path / "late")
    late.start(delay=2.0)
    try:
        started = time.monotonic()
        client = remote.connect(target_of(late), 2, 20)
        assert time.monotonic() - started >= 1.5
        client.close()
    finally:
        time.sleep(0.2)
        late.stop()
    never = make_sshd(tmp_path / "never")
    with pytest.raises(OperationError, match=r"cannot reach .* within 2 s"):
        remote.connect(target_of(never), 1, 2)


def run_to_done(lab, file_server, count: int = 3):
    contents = lab.serve_runs(file_server, count, first=2001)
    dispatcher = Dispatcher(lab.settings, lab.backend, lab.registry, lab.store)
    (name,) = dispatcher.dispatch(TAXON, utc_now()).started
    record = lab.store.get(name)
    deadline = time.monotonic() + 60
    while lab.backend.status(record).value != "done":
        assert time.monotonic() < deadline, "the remote runner did not finish"
        time.sleep(0.3)
    return contents, record


def test_a_whole_chunk_is_fetched_remotely_collected_home_and_the_worker_destroyed(
        ssh_lab, file_server):
    contents, record = run_to_done(ssh_lab, file_server)
    remote_dir = Path(record.remote_dir)
    assert record.phase is Phase.RUNNING and remote_dir.exists()
    assert (remote_dir / "token").stat().st_mode & 0o777 == 0o600

    report = Collector(ssh_lab.settings, ssh_lab.backend, ssh_lab.registry,
                       ssh_lab.store).collect()

    assert report.collected == [record.name]
    for acc, files in contents.items():
        for name, data in files.items():
            home = ssh_lab.genomes() / acc / name
            assert hashlib.md5(home.read_bytes()).hexdigest() == md5(data)
    assert {r.status for r in ssh_lab.accessions.load().values()} == {RunStatus.FETCHED}
    assert not remote_dir.exists()
    assert ssh_lab.backend.list_live() == []


def test_an_md5_mismatch_after_transfer_keeps_the_remote_worker(ssh_lab, file_server):
    _, record = run_to_done(ssh_lab, file_server, count=2)
    bad = next(Path(record.remote_dir, "out").rglob("*_2.fastq.gz"))
    bad.write_bytes(b"not the data" * 100)

    report = Collector(ssh_lab.settings, ssh_lab.backend, ssh_lab.registry,
                       ssh_lab.store).collect()

    assert report.held == [record.name]
    assert Path(record.remote_dir).exists()
    assert "failed verification" in ssh_lab.registry.get(TAXON).needs_attention
    assert {r.status for r in ssh_lab.accessions.load().values()} == {RunStatus.ASSIGNED}


def test_an_rsync_cut_mid_file_is_resumed_from_the_partial_bytes(sshd, tmp_path):
    source = tmp_path / "remote" / "mf-1-0-cccccc" / "out"
    source.mkdir(parents=True)
    data = bytes(range(256)) * (40 * 4096)  # 40 MiB
    (source / "big.fastq.gz").write_bytes(data)
    target = target_of(sshd)
    rsh = remote.rsync_rsh(target, remote.write_known_hosts(target, tmp_path / "kh"), 5)
    dest = tmp_path / "staging"
    dest.mkdir()
    argv = rsync_pull_argv(f"{target.user}@127.0.0.1:{source}", dest, 30, rsh)
    slow = subprocess.Popen([*argv[:1], "--bwlimit=4000", *argv[1:]],
                            stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    slow.send_signal(signal.SIGINT)
    slow.wait(timeout=30)
    partial = list((dest / ".rsync-partial").glob("*"))
    assert partial and 0 < partial[0].stat().st_size < len(data)
    assert not (dest / "big.fastq.gz").exists()  # a half file never takes the real name

    subprocess.run(argv, check=True, timeout=60)

    assert hashlib.md5((dest / "big.fastq.gz").read_bytes()).hexdigest() == \
        hashlib.md5(data).hexdigest()


def test_a_backend_start_with_a_changed_host_key_uploads_nothing(ssh_lab, file_server,
                                                                 tmp_path):
    from backend.compute.ssh import SshBackend

    other = keygen(tmp_path / "impostor").split()
    kh = tmp_path / "pinned_wrong"
    kh.write_text(f"[127.0.0.1]:{ssh_lab.settings.ssh_hosts[0].rsplit(':', 1)[1]} "
                  f"{other[0]} {other[1]}\n")
    ssh_lab.settings = ssh_lab.settings.with_overrides(ssh_known_hosts=kh)
    ssh_lab.backend = SshBackend(ssh_lab.settings)
    ssh_lab.serve_runs(file_server, 1)
    report = Dispatcher(ssh_lab.settings, ssh_lab.backend, ssh_lab.registry,
                        ssh_lab.store).dispatch(TAXON, utc_now())
    assert report.started == []
    (record,) = ssh_lab.store.all()
    assert record.phase is Phase.DESTROYED and "host key" in record.last_error
    assert not Path(ssh_lab.settings.ssh_remote_dir).exists() or \
        not any(Path(ssh_lab.settings.ssh_remote_dir).iterdir())
    assert "host key" in ssh_lab.registry.get(TAXON).needs_attention
    assert ssh_lab.accessions.load()["ERR1001"].status is RunStatus.PENDING
