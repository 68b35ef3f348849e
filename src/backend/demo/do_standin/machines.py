"""A stand-in droplet's body: its own loopback address with a real sshd on port 22.

The user data is applied as cloud-init would apply it on first boot, as far as it matters for
a worker: the host key from ``ssh_keys``, the account's keys as ``authorized_keys``, the
``runcmd`` commands that make folders, and the marker files a command waits for. Package
installs and downloads (``curl … | bash``) are recorded as skipped: this machine has what it
has. Needs root (port 22, root logins), as the SSH tests do.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SSHD = "/usr/sbin/sshd"
#: Only these programs of ``runcmd`` run on the host; everything else is recorded as skipped.
RUNNABLE = {"mkdir", "chown", "chmod", "touch"}
#: ``while [ ! -f X ]``, ``until [ -f X ]``, ``test -f X``: a wait for a marker file X.
MARKER_WAIT = re.compile(r"(?:\[\s*!?\s*-[ef]|test\s+!?\s*-[ef])\s+(/[^\s;\]]+)")
ENV_TAG = "MICROFETCH_STANDIN_DROPLET"
FIRST_HOST, LAST_HOST = 2, 254
LISTEN_SECONDS = 10.0
REAP_SECONDS = 15.0


class AddressTaken(RuntimeError):
    """sshd could not start, most likely because another process took the address first."""


@dataclass
class CloudPlan:
    """What cloud-init would do with one user data document (a pure reading of it)."""

    host_private: str = ""
    host_public: str = ""
    commands: list[list[str]] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan(user_data: str) -> CloudPlan:
    """Read a ``#cloud-config`` document into the steps the stand-in plays."""
    result = CloudPlan()
    try:
        document = yaml.safe_load(user_data or "") or {}
    except yaml.YAMLError:
        document = {}
    if not isinstance(document, dict):
        result.skipped.append("user data that is not a #cloud-config mapping")
        return result
    keys = document.get("ssh_keys") or {}
    result.host_private = str(keys.get("ed25519_private", ""))
    result.host_public = str(keys.get("ed25519_public", ""))
    if document.get("packages"):
        result.skipped.append("packages: " + " ".join(map(str, document["packages"])))
    for entry in document.get("runcmd") or []:
        argv = [str(a) for a in entry] if isinstance(entry, list) else shlex.split(str(entry))
        text = " ".join(argv)
        result.markers += [m for m in MARKER_WAIT.findall(text) if m not in result.markers]
        if argv and argv[0] in RUNNABLE:
            result.commands.append(argv)
        else:
            result.skipped.append(text)
    return result


def free_address(taken: set[str]) -> str:
    """The first 127.0.0.N (N from 2) whose port 22 nobody here or elsewhere holds."""
    for host in range(FIRST_HOST, LAST_HOST + 1):
        address = f"127.0.0.{host}"
        if address in taken:
            continue
        with socket.socket() as sock:
            # As sshd does: connections of a deleted droplet in TIME_WAIT do not hold the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, 22))
            except OSError:
                continue  # another stand-in (or anything else) listens there
        return address
    raise RuntimeError("no free loopback address 127.0.0.2-254 with port 22 for a droplet")


def sshd_config(folder: Path, address: str, tag: str) -> str:
    """A droplet's sshd. ``PYENV_REHASH_TIMEOUT``: this machine's root may run `pyenv rehash`
    from ~/.bashrc, which would wait 60 s on a lock a killed shell left behind."""
    return f"""Port 22
ListenAddress {address}
HostKey {folder}/host_ed25519
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
SetEnv {ENV_TAG}={tag} PYENV_REHASH_TIMEOUT=1
LogLevel INFO
"""


@dataclass
class Machine:
    """One droplet's sshd and what its first boot made, so that delete can take it away."""

    droplet_id: int
    address: str
    folder: Path
    plan: CloudPlan
    authorized_keys: list[str]
    tag: str = ""
    #: Seconds between sshd answering and cloud-init's commands running (as on a real first
    #: boot, where SSH is up while packages still install); 0 runs them before sshd starts.
    bootstrap_delay: float = 0.0
    proc: subprocess.Popen | None = None
    made: list[Path] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    gone: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.tag = self.tag or f"{self.droplet_id}-{os.getpid()}-{time.monotonic_ns()}"

    def first_boot(self) -> bool:
        """cloud-init's part: keys, folders, markers; then sshd. False when already deleted."""
        with self.lock:
            if self.gone:
                return False
            self._setup()
            if not self.bootstrap_delay:
                self._run_plan()
            self.start_sshd()
        if self.bootstrap_delay:
            threading.Thread(target=self._late_plan, daemon=True).start()
        return True

    def _late_plan(self) -> None:
        time.sleep(self.bootstrap_delay)
        with self.lock:
            if not self.gone:
                self._run_plan()

    def _setup(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder / "host_ed25519"
        key.touch(mode=0o600)
        key.write_text(self.plan.host_private)
        (self.folder / "host_ed25519.pub").write_text(self.plan.host_public + "\n")
        (self.folder / "authorized_keys").write_text("".join(k + "\n"
                                                             for k in self.authorized_keys))
        (self.folder / "sshd_config").write_text(sshd_config(self.folder, self.address,
                                                             self.tag))

    def _run_plan(self) -> None:
        """cloud-init's runcmd: the folders and markers, in the document's order."""
        for argv in self.plan.commands:
            self._run(argv)
        for marker in self.plan.markers:
            path = Path(marker)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def _run(self, argv: list[str]) -> None:
        if argv[0] == "mkdir":  # remember what did not exist, so delete removes the disk
            self.made += [Path(a) for a in argv[1:] if a.startswith("/") and not Path(a).exists()]
        subprocess.run(argv, check=False, timeout=30, capture_output=True)
        self.ran.append(" ".join(argv))

    def start_sshd(self) -> None:
        """Start sshd and return once it says it listens (a connect could reach a squatter)."""
        Path("/run/sshd").mkdir(exist_ok=True)
        log = self.folder / "sshd.log"
        start = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")], stderr=handle)
        listening = f"Server listening on {self.address} port 22".encode()
        deadline = time.monotonic() + LISTEN_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(log, "rb") as handle:
                handle.seek(start)
                if listening in handle.read():
                    return
            time.sleep(0.05)
        if self.proc.poll() is not None:
            raise AddressTaken(f"sshd of droplet {self.droplet_id} exited "
                               f"({self.proc.returncode}): is {self.address}:22 taken?")
        raise RuntimeError(f"sshd of droplet {self.droplet_id} did not listen on "
                           f"{self.address}:22 within {LISTEN_SECONDS:.0f} s")

    def halt(self) -> None:
        """Power gone: sshd, its sessions and every process started through it end."""
        with self.lock:
            self._halt()

    def _halt(self) -> None:
        if self.proc is not None:
            doomed = descendants(self.proc.pid) | tagged(self.tag)
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
            doomed |= tagged(self.tag)  # again: a child may have forked meanwhile
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            # SIGKILL lands asynchronously, and an orphan stays a zombie (which `kill -0` still
            # finds) until init reaps it. Return once they have left the process table, so a
            # caller asking right after a reboot or a delete sees what a real one leaves.
            deadline = time.monotonic() + REAP_SECONDS
            while any(Path(f"/proc/{pid}").exists() for pid in doomed) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)

    def reboot(self) -> None:
        with self.lock:
            if self.gone:
                return
            self._halt()
            self.start_sshd()

    def destroy(self) -> None:
        """Halt and take the disk away: the folders its first boot made."""
        with self.lock:
            self.gone = True
            self._halt()
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (sshd's sessions and their shells)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def tagged(tag: str) -> set[int]:
    """Processes started through the droplet's sshd, found by the variable sshd gave them.

    A runner started with ``setsid nohup … &`` leaves sshd's process tree, but keeps its
    environment, so this is how a reboot finds it.
    """
    needle = f"{ENV_TAG}={tag}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.add(int(entry.name))
    return found
