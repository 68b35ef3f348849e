"""Remote control of a worker over SSH (paramiko), with the host key pinned.

Host keys are never trusted on first use: the client knows only the pinned key and uses
``RejectPolicy``, so an unknown or changed key ends the connection before anything is sent.
The same pin is written to a known_hosts file for rsync (``StrictHostKeyChecking=yes``).
Droplets reuse all of this: a droplet is an SSH host that microfetch created.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shlex
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import paramiko

from backend.compute.base import WorkerState, last_json, state_from_supervisor
from backend.errors import OperationError
from backend.retry import GaveUp, ssh_policy
from backend.state.accessions import ACCESSION
from backend.state.statefile import atomic_write_text
from backend.state.workers import NAME_PATTERN


@dataclass(frozen=True)
class SshTarget:
    """Where a worker lives: login, address, private key, and the pinned public host key."""

    user: str
    host: str
    port: int
    key_path: Path
    host_key: str  # "ssh-ed25519 AAAA..."

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_key}"


def parse_host(entry: str) -> tuple[str, str, int]:
    """``user@host[:port]`` -> (user, host, port); ValueError saying what is expected."""
    user, at, rest = entry.partition("@")
    host, _, port = rest.partition(":")
    if not at or not user or not host or (port and not port.isdigit()):
        raise ValueError(f"{entry!r} is not user@host[:port], e.g. microfetch@lab-server:22")
    return user, host, int(port or 22)


def pinned_key(host_key: str) -> paramiko.PKey:
    kind, _, data = host_key.strip().partition(" ")
    blob = base64.b64decode(data.split()[0])
    return paramiko.PKey.from_type_string(kind, blob)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def connect(target: SshTarget, connect_timeout: float, boot_seconds: float,
            sleep: Callable[[float], None] = time.sleep) -> paramiko.SSHClient:
    """Connect with the pinned key, retrying while the host boots (the SSH policy of
    :mod:`backend.retry`: refused, reset, timed out, no banner yet) for at most
    ``boot_seconds``; OperationError after, or at once for a refused key or host key."""

    def attempt() -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = pinned_key(target.host_key)
        client.get_host_keys().add(target.known_hosts_name, key.get_name(), key)
        try:
            client.connect(target.host, target.port, username=target.user,
                           key_filename=str(target.key_path), timeout=connect_timeout,
                           banner_timeout=connect_timeout, auth_timeout=connect_timeout,
                           allow_agent=False, look_for_keys=False)
        except BaseException:
            client.close()
            raise
        return client

    where = f"{target.user}@{target.known_hosts_name}"
    try:
        return ssh_policy(boot_seconds).call(attempt, sleep=sleep)
    except GaveUp as exc:
        raise OperationError(
            f"cannot reach {where} over SSH within {boot_seconds:.0f} s ({exc.last}); check "
            "that the host is up and the key is authorised") from None
    except paramiko.BadHostKeyException as exc:
        raise OperationError(
            f"the host key of {target.known_hosts_name} changed: pinned "
            f"{fingerprint(exc.expected_key)}, offered {fingerprint(exc.key)}. Nothing was "
            "uploaded. If the host was rebuilt, check the new key out of band and update "
            "the pin (MICROFETCH_SSH_KNOWN_HOSTS)", permanent=True) from None
    except paramiko.AuthenticationException as exc:
        raise OperationError(
            f"{where} refused the key {target.key_path} ({type(exc).__name__}: {exc}); nothing "
            "was uploaded. Authorise its public key for that login") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise OperationError(
                f"{target.known_hosts_name} offered a host key of a type that is not "
                f"pinned ({exc}); nothing was uploaded", permanent=True) from None
        raise OperationError(f"cannot connect to {where} over SSH ({type(exc).__name__}: "
                             f"{exc}); nothing was uploaded") from None
    except (OSError, EOFError) as exc:
        raise OperationError(f"cannot connect to {where} over SSH ({type(exc).__name__}: "
                             f"{exc}); check the host, its port and MICROFETCH_SSH_KEY") from None


def run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> str:
    """Run a command; OperationError with its stderr when it fails."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    status = stdout.channel.recv_exit_status()
    out = stdout.read().decode("utf-8", "replace")
    if status != 0:
        raise OperationError(f"`{command}` failed on the worker host ({status}): "
                             f"{stderr.read().decode('utf-8', 'replace').strip()[:300]}")
    return out


def _checked(remote_dir: str) -> str:
    """A worker folder path, refused unless it ends with a worker name (rm -rf safety)."""
    if not NAME_PATTERN.match(PurePosixPath(remote_dir).name) or ".." in remote_dir.split("/"):
        raise OperationError(f"{remote_dir!r} is not a worker folder", permanent=True)
    return shlex.quote(remote_dir)


def upload_folder(client: paramiko.SSHClient, local: Path, remote_dir: str) -> None:
    """Copy a worker folder by SFTP, keeping modes (token 0600, scripts executable)."""
    _checked(remote_dir)
    sftp = client.open_sftp()
    try:
        for path in sorted([local, *local.rglob("*")]):
            target = str(PurePosixPath(remote_dir) / path.relative_to(local).as_posix())
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_dir():
                with contextlib.suppress(OSError):  # exists: an upload resumed after a crash
                    sftp.mkdir(target, mode)
            else:
                sftp.put(str(path), target)
            sftp.chmod(target, mode)
    finally:
        sftp.close()


def preflight(client: paramiko.SSHClient, remote_dir: str) -> None:
    """The worker's own check (Python >= 3.9, disk, tools) before its chunk starts."""
    folder = _checked(remote_dir)
    out = run(client, f"python3 {folder}/nextflow/bin/preflight.py {folder} || true")
    report = last_json(out)
    if report is None:
        raise OperationError(f"the worker host cannot run the chunk: python3 is missing or "
                             f"too old to run preflight.py ({out.strip()[-200:]})",
                             permanent=True)
    if not report.get("ok"):
        raise OperationError("the worker host cannot run the chunk: "
                             + "; ".join(map(str, report.get("reasons") or ["unknown"])),
                             permanent=True)


#: systemd where it runs and we are root (it restarts the supervisor, also after a reboot);
#: otherwise the supervisor alone, in its own session so it survives the disconnect.
START_SCRIPT = """
unit={d}/nextflow/microfetch-worker@.service
if [ -d /run/systemd/system ] && [ "$(id -u)" = 0 ] && [ -f "$unit" ] \
   && command -v systemctl >/dev/null; then
  install -m 0644 "$unit" /etc/systemd/system/microfetch-worker@.service
  mkdir -p /etc/microfetch
  echo "MICROFETCH_WORKERS_DIR={parent}" > /etc/microfetch/worker.env
  systemctl daemon-reload && systemctl start microfetch-worker@{name}.service && echo systemd
else
  setsid nohup python3 {d}/nextflow/bin/supervise.py {d} --log {d}/run_chunk.out \
    > /dev/null 2>&1 < /dev/null &
  echo supervise
fi
"""


def start_runner(client: paramiko.SSHClient, remote_dir: str) -> str:
    """Start the supervised runner; returns how (``systemd`` or ``supervise``)."""
    folder = _checked(remote_dir)
    path = PurePosixPath(remote_dir)
    return run(client, START_SCRIPT.format(d=folder, parent=shlex.quote(str(path.parent)),
                                           name=path.name)).strip().splitlines()[-1]


def runner_state(client: paramiko.SSHClient, remote_dir: str) -> WorkerState:
    """The supervisor's own answer: the runner named by its id, never a bare pid."""
    folder = _checked(remote_dir)
    out = run(client, f"if [ -d {folder} ]; then python3 {folder}/nextflow/bin/supervise.py "
                      f"--status {folder}; else echo '{{\"state\": \"gone\"}}'; fi")
    return state_from_supervisor(last_json(out))


def remove_worker(client: paramiko.SSHClient, remote_dir: str) -> None:
    """Stop the runner for good (and its unit), then its process group, then the folder."""
    folder = _checked(remote_dir)
    name = PurePosixPath(remote_dir).name
    run(client, f"if [ -d {folder} ]; then python3 {folder}/nextflow/bin/supervise.py --stop "
                f"--kill-after 15 {folder} >/dev/null 2>&1; fi; "
                f"systemctl stop microfetch-worker@{name}.service >/dev/null 2>&1; "
                f"rm -rf -- {folder}")


def remove_runs(client: paramiko.SSHClient, remote_dir: str, runs: list[str]) -> None:
    """Delete the named runs' folders under the worker's ``out/`` (already home)."""
    folder = _checked(remote_dir)
    names = [run for run in runs if ACCESSION.match(run)]  # they become paths: refuse others
    if names:
        run(client, "cd " + folder + "/out && rm -rf -- " + " ".join(map(shlex.quote, names)))


def list_workers(client: paramiko.SSHClient, base: str) -> list[str]:
    out = run(client, f"ls -1 {shlex.quote(base)} 2>/dev/null || true")
    return [name for name in out.split() if NAME_PATTERN.match(name)]


def write_known_hosts(target: SshTarget, path: Path) -> Path:
    atomic_write_text(path, target.known_hosts_line() + "\n")
    return path


def rsync_rsh(target: SshTarget, known_hosts: Path, connect_timeout: int) -> list[str]:
    """The ssh command rsync uses: the pinned key only, no prompts, bounded waits."""
    return [
        "ssh", "-i", str(target.key_path), "-p", str(target.port),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=3",
    ]


def ship_and_start(target: SshTarget, folder: Path, remote_dir: str, connect_timeout: float,
                   boot_seconds: float) -> None:
    """Connect (waiting for a booting host), upload the worker folder, start the runner."""
    client = connect(target, connect_timeout, boot_seconds)
    try:
        run(client, f"mkdir -p {shlex.quote(str(PurePosixPath(remote_dir).parent))}")
        upload_folder(client, folder, remote_dir)
        preflight(client, remote_dir)
        start_runner(client, remote_dir)
    finally:
        client.close()


def state_of(target: SshTarget, remote_dir: str, connect_timeout: float) -> WorkerState:
    client = connect(target, connect_timeout, connect_timeout)
    try:
        return runner_state(client, remote_dir)
    finally:
        client.close()


def remove_runs_of(target: SshTarget, remote_dir: str, runs: list[str],
                   connect_timeout: float) -> None:
    """:func:`remove_runs` on its own connection (collect while fetching)."""
    client = connect(target, connect_timeout, connect_timeout)
    try:
        remove_runs(client, remote_dir, runs)
    finally:
        client.close()


def pull_out(target: SshTarget, remote_dir: str, dest: Path, known_hosts: Path,
             io_timeout: int, connect_timeout: int, what: str) -> None:
    """rsync the worker's ``out/`` home over ssh, with the pinned key only."""
    from backend.compute.transfer import rsync_pull_argv
    from backend.compute.transfer import run as run_local

    rsh = rsync_rsh(target, write_known_hosts(target, known_hosts), connect_timeout)
    dest.mkdir(parents=True, exist_ok=True)
    argv = rsync_pull_argv(f"{target.user}@{target.host}:{remote_dir}/out", dest, io_timeout, rsh)
    run_local(argv, what)
