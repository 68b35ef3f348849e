"""cloud-init user data for a droplet, rendered per droplet (a pure function).

It installs python3, rsync and, when a Nextflow version is set, a Java runtime and the Nextflow
launcher of that version (downloaded from a pinned URL and, when a SHA-256 is set, checked
against it before it is installed: a mismatch installs nothing). It installs the ed25519 host
key that microfetch generated for this droplet (so the key is pinned before first contact) and
prepares the worker folder. Its last step writes a marker file: home starts the runner only
once the marker is there and the tools answer, never while packages are still installing.
Chunks travel later by SFTP, so the document stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAX_USER_DATA = 64 * 1024
WORKERS_ROOT = "/srv/microfetch"
STATE_DIR = "/var/lib/microfetch"
#: Left by the install script when the launcher's SHA-256 differs from the pinned one.
NEXTFLOW_REJECTED = f"{STATE_DIR}/nextflow.rejected"
NEXTFLOW_SCRIPT = f"{STATE_DIR}/install-nextflow.sh"
#: Where the launcher keeps the Nextflow jar: the same for the bootstrap, SSH and systemd.
NXF_HOME = f"{STATE_DIR}/nextflow"
#: A drop-in of the worker's systemd unit (a unit does not read /etc/environment).
UNIT_DROP_IN = "/etc/systemd/system/microfetch-worker@.service.d/nextflow.conf"
LAUNCHER_URL = "https://github.com/nextflow-io/nextflow/releases/download/v{version}/nextflow"


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


def bootstrap_marker(worker: str, root: str = WORKERS_ROOT) -> str:
    """The file the user data writes last. It lives in the worker's own folder, so that it
    goes with the worker (and stand-in droplets sharing one host never see each other's)."""
    return f"{root}/{worker}/.bootstrap.done"


def launcher_url(version: str) -> str:
    return LAUNCHER_URL.format(version=version)


def nextflow_script(version: str, sha256: str, *, bin_dir: str = "/usr/local/bin",
                    rejected: str = NEXTFLOW_REJECTED) -> str:
    """Download the pinned launcher, check it (fail closed), install it, fetch its jar."""
    check = ""
    if sha256:
        check = (f'if ! echo "{sha256}  $part" | sha256sum -c --quiet -; then\n'
                 f'  mv "$part" {rejected}; exit 1\nfi\n')
    return (
        "#!/bin/sh\nset -eu\n"
        f"part={bin_dir}/nextflow.part\n"
        f"curl -fsSL --retry 5 -o \"$part\" {launcher_url(version)}\n"
        f"{check}"
        f'chmod 755 "$part"\nmv "$part" {bin_dir}/nextflow\n'
        # The launcher fetches the jar of NXF_VER on first use: do it now, not mid-chunk.
        f"NXF_VER={version} NXF_HOME={NXF_HOME} {bin_dir}/nextflow -version\n"
    )


def render_user_data(worker: str, host_key: HostKey, *, nextflow_version: str = "",
                     nextflow_sha256: str = "", user: str = "root",
                     extra_packages: Sequence[str] = ()) -> str:
    """The ``#cloud-config`` document for one droplet (no Nextflow when no version);
    ``extra_packages`` are Debian packages the products need (fastp and the assembler)."""
    packages = ["python3", "rsync", "curl", *extra_packages]
    runcmd = [["mkdir", "-p", f"{WORKERS_ROOT}/{worker}"]]
    files = []
    if user != "root":
        runcmd.append(["chown", "-R", f"{user}:{user}", WORKERS_ROOT])
    if nextflow_version:
        packages.append("default-jre-headless")
        pin = {"NXF_VER": nextflow_version, "NXF_HOME": NXF_HOME}
        # pam_env reads /etc/environment for every SSH session (a runner started by
        # supervise.py inherits it); systemd reads the drop-in for the worker's unit.
        files += [{"path": "/etc/environment", "append": True,
                   "content": "".join(f"{k}={v}\n" for k, v in pin.items())},
                  {"path": UNIT_DROP_IN, "content": "[Service]\n" + "".join(
                      f"Environment={k}={v}\n" for k, v in pin.items())},
                  {"path": NEXTFLOW_SCRIPT, "permissions": "0755",
                   "content": nextflow_script(nextflow_version, nextflow_sha256)}]
        runcmd.append(["sh", NEXTFLOW_SCRIPT])
    runcmd.append(["touch", bootstrap_marker(worker)])  # last: everything above has run
    document: dict = {
        "ssh_deletekeys": True,
        # ed25519 is supplied below, so cloud-init generates no key of its own.
        "ssh_genkeytypes": ["ed25519"],
        "ssh_keys": {"ed25519_private": host_key.private_openssh,
                     "ed25519_public": host_key.public_line},
        "package_update": True,
        "packages": packages,
    }
    if files:
        document["write_files"] = files
    document["runcmd"] = runcmd
    text = "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
    if len(text.encode()) > MAX_USER_DATA:
        raise ValueError(f"user data is {len(text.encode())} bytes, over DigitalOcean's 64 KiB")
    return text
