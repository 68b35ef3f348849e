"""A real sshd on 127.0.0.1 with generated host and user keys, for tests (run as root)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.loopback import free_port


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    kind, key = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {key}"



@dataclass
class Sshd:
    folder: Path
    port: int
    host_key: str
    user_key: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def known_hosts(self) -> Path:
        path = self.folder / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {self.host_key}\n")
        return path

    def start(self, delay: float = 0.0) -> None:
        """Start sshd (after ``delay`` seconds, in the background) and wait until it listens."""
        Path("/run/sshd").mkdir(exist_ok=True)
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.folder / "sshd_config")]
        if delay:
            def later() -> None:
                time.sleep(delay)
                self.procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))

            threading.Thread(target=later, daemon=True).start()
            return
        self.procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)


def make_sshd(folder: Path) -> Sshd:
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_ed25519")
    user_public = keygen(folder / "user_ed25519")
    (folder / "authorized_keys").write_text(user_public + "\n")
    port = free_port()
    (folder / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
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
# Root's ~/.bashrc may run `pyenv rehash`, which waits 60 s on a lock a killed shell left
# behind: wait at most 1 s, so a stale lock cannot stall every command of the tests.
SetEnv PYENV_REHASH_TIMEOUT=1
LogLevel ERROR
""")
    return Sshd(folder, port, host_key, folder / "user_ed25519")
