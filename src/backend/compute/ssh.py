"""The `ssh` backend: workers on a fixed list of hosts the lab already owns.

Hosts come from MICROFETCH_SSH_HOSTS (``user@host[:port]``, comma-separated); their host keys
are pinned in MICROFETCH_SSH_KNOWN_HOSTS (an OpenSSH known_hosts file). Each host takes at most
MICROFETCH_SSH_WORKERS_PER_HOST workers at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import paramiko

from backend.compute import remote
from backend.compute.base import ComputeBackend, LiveWorker, SaveRecord, WorkerState
from backend.errors import OperationError, UsageError
from backend.settings import Settings
from backend.state.workers import Phase, WorkerRecord, WorkerStore


def read_pins(path: Path) -> paramiko.HostKeys:
    try:
        return paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException) as exc:
        raise UsageError(f"cannot read MICROFETCH_SSH_KNOWN_HOSTS={path}: {exc}") from None


def pin_for(pins: paramiko.HostKeys, host: str, port: int) -> str:
    """The pinned key line of a host, or '' when it has none."""
    name = host if port == 22 else f"[{host}]:{port}"
    keys = pins.lookup(name)
    if not keys:
        return ""
    kind = "ssh-ed25519" if "ssh-ed25519" in keys else next(iter(keys.keys()))
    return f"{kind} {keys[kind].get_base64()}"


def startup_problems(settings: Settings) -> list[str]:
    """What `serve` needs before it can use the ssh backend, each saying what to set."""
    problems = []
    if not settings.ssh_hosts:
        problems.append("set MICROFETCH_SSH_HOSTS to user@host[:port],… for the ssh backend")
    if not settings.ssh_key or not Path(settings.ssh_key).is_file():
        problems.append("set MICROFETCH_SSH_KEY to the private key that logs in to those hosts")
    if not settings.ssh_known_hosts or not Path(settings.ssh_known_hosts).is_file():
        problems.append("set MICROFETCH_SSH_KNOWN_HOSTS to a known_hosts file pinning their keys")
        return problems
    pins = read_pins(Path(settings.ssh_known_hosts))
    for entry in settings.ssh_hosts:
        try:
            _, host, port = remote.parse_host(entry)
        except ValueError as exc:
            problems.append(f"MICROFETCH_SSH_HOSTS: {exc}")
            continue
        if not pin_for(pins, host, port):
            problems.append(f"{entry} has no pinned key in {settings.ssh_known_hosts}; check "
                            f"its fingerprint, then add it (ssh-keyscan -p {port} {host})")
    return problems


class SshBackend(ComputeBackend):
    name = "ssh"

    def __init__(self, settings: Settings) -> None:
        problems = startup_problems(settings)
        if problems:
            raise UsageError("the ssh backend cannot start: " + " ".join(problems))
        self.settings = settings
        assert settings.ssh_known_hosts is not None and settings.ssh_key is not None
        pins = read_pins(Path(settings.ssh_known_hosts))
        self.targets: dict[str, remote.SshTarget] = {}
        for entry in settings.ssh_hosts:
            user, host, port = remote.parse_host(entry)
            self.targets[entry] = remote.SshTarget(user, host, port, Path(settings.ssh_key),
                                                   pin_for(pins, host, port))

    def _connect(self, target: remote.SshTarget, boot: float | None = None) -> paramiko.SSHClient:
        return remote.connect(target, self.settings.ssh_connect_timeout,
                              self.settings.ssh_connect_timeout if boot is None else boot)

    def target(self, record: WorkerRecord) -> remote.SshTarget:
        if record.host not in self.targets:
            raise OperationError(f"worker {record.name} is on {record.host!r}, which is no "
                                 "longer in MICROFETCH_SSH_HOSTS", permanent=True)
        return self.targets[record.host]

    def slots(self, live: Sequence[WorkerRecord]) -> int:
        used = Counter(r.host for r in live if r.backend == self.name)
        cap = self.settings.ssh_workers_per_host
        return sum(max(0, cap - used[entry]) for entry in self.targets)

    def _pick_host(self) -> str:
        """The host with the fewest live workers, among those below their cap."""
        used = Counter(r.host for r in WorkerStore.of(self.settings).live()
                       if r.backend == self.name)
        free = [e for e in self.targets if used[e] < self.settings.ssh_workers_per_host]
        if not free:
            raise OperationError("every SSH host already runs MICROFETCH_SSH_WORKERS_PER_HOST "
                                 "workers")
        return min(free, key=lambda entry: used[entry])

    def disk_bytes(self) -> int:
        return int(self.settings.worker_disk_gb * 1e9)

    def start(self, record: WorkerRecord, folder: Path, save: SaveRecord) -> WorkerRecord:
        if record.remote_dir and self.status(record) in (WorkerState.RUNNING, WorkerState.DONE):
            return record  # started before a crash
        record.host = record.host or self._pick_host()
        target = self.target(record)
        record.address, record.host_key = target.host, target.host_key
        record.remote_dir = self._remote_dir(target, record.name)
        record.phase = Phase.STARTING
        save(record)  # say where it goes before anything is sent there
        remote.ship_and_start(target, folder, record.remote_dir,
                              self.settings.ssh_connect_timeout, self.settings.ssh_boot_seconds)
        record.phase = Phase.RUNNING
        save(record)
        return record

    def _remote_dir(self, target: remote.SshTarget, name: str) -> str:
        """The worker folder on the host: under the login's home unless the setting is absolute."""
        base = PurePosixPath(self.settings.ssh_remote_dir)
        if not base.is_absolute():
            client = self._connect(target, self.settings.ssh_boot_seconds)
            try:
                base = PurePosixPath(remote.run(client, "pwd").strip()) / base
            finally:
                client.close()
        return str(base / name)

    def status(self, record: WorkerRecord) -> WorkerState:
        if not record.remote_dir:
            return WorkerState.STARTING
        return remote.state_of(self.target(record), record.remote_dir,
                               self.settings.ssh_connect_timeout)

    def pull(self, record: WorkerRecord, dest: Path, timeout: int) -> None:
        target = self.target(record)
        remote.pull_out(target, record.remote_dir, dest, self._known_hosts(record), timeout,
                        self.settings.ssh_connect_timeout,
                        f"rsync of worker {record.name} from {target.host}")

    def _known_hosts(self, record: WorkerRecord) -> Path:
        return Path(self.settings.data_dir) / "ssh" / f"{record.name}.known_hosts"

    def remove_runs(self, record: WorkerRecord, runs: Sequence[str]) -> None:
        remote.remove_runs_of(self.target(record), record.remote_dir, list(runs),
                              self.settings.ssh_connect_timeout)

    def destroy(self, record: WorkerRecord) -> None:
        if not record.remote_dir:
            return
        client = self._connect(self.target(record))
        try:
            remote.remove_worker(client, record.remote_dir)
        finally:
            client.close()
        self._known_hosts(record).unlink(missing_ok=True)

    def list_live(self) -> list[LiveWorker]:
        live = []
        for entry, target in self.targets.items():
            client = self._connect(target)
            try:
                names = remote.list_workers(client, self.settings.ssh_remote_dir)
            finally:
                client.close()
            live += [LiveWorker(name, target.host, entry) for name in names]
        return live
