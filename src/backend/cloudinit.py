"""cloud-init user data for a droplet, rendered per droplet (a pure function).

It installs python3, rsync, a Java runtime and Nextflow, installs the ed25519 host key that
microfetch generated for this droplet (so the key is pinned before first contact), and
prepares the worker folder. Chunks travel later by SFTP, so the document stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAX_USER_DATA = 64 * 1024
WORKERS_ROOT = "/srv/microfetch"


@dataclass(frozen=True)
class HostKey:
    private_openssh: str
    public_line: str  # "ssh-ed25519 AAAA..."


def generate_host_key() -> HostKey:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private, public)


def render_user_data(worker: str, host_key: HostKey, *, nextflow: bool = True,
                     user: str = "root") -> str:
    """The ``#cloud-config`` document for one droplet."""
    packages = ["python3", "rsync", "curl"] + (["default-jre-headless"] if nextflow else [])
    runcmd = [["mkdir", "-p", f"{WORKERS_ROOT}/{worker}"]]
    if user != "root":
        runcmd.append(["chown", "-R", f"{user}:{user}", WORKERS_ROOT])
    if nextflow:
        runcmd.append(["sh", "-c", "cd /usr/local/bin && curl -fsSL https://get.nextflow.io | "
                                   "bash && chmod 755 nextflow"])
    document = {
        "ssh_deletekeys": True,
        # ed25519 is supplied below, so cloud-init generates no key of its own.
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {"ed25519_private": host_key.private_openssh,
                     "ed25519_public": host_key.public_line},
        "package_update": True,
        "packages": packages,
        "runcmd": runcmd,
    }
    text = "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
    if len(text.encode()) > MAX_USER_DATA:
        raise ValueError(f"user data is {len(text.encode())} bytes, over DigitalOcean's 64 KiB")
    return text
