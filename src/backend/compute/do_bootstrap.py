"""Is a fresh droplet ready for its runner? Its user data finished and its tools answer.

SSH answers long before cloud-init has installed the packages. The user data writes a marker
file last (:func:`backend.compute.cloudinit.bootstrap_marker`); home waits for it with a deadline,
reading ``cloud-init status`` meanwhile (one that finished without the marker fails at once),
then asks each tool the runner needs to answer. The runner starts only after both.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paramiko

from backend.compute import remote
from backend.compute.cloudinit import NEXTFLOW_REJECTED, UNIT_DROP_IN, bootstrap_marker
from backend.errors import OperationError

#: How long one tool check on a fresh droplet may take (`nextflow -version` starts a JVM).
TOOL_CHECK_SECONDS = 180
FIRST_POLL_SECONDS = 0.5


def pauses(longest: float) -> Iterator[float]:
    """Waits between polls: a quick first look (a stand-in or a fast region is ready in a
    second), then doubling up to ``longest``, so a slow one costs few requests."""
    wait = min(FIRST_POLL_SECONDS, longest)
    while True:
        yield wait
        wait = min(wait * 2, longest)


def tool_checks(nextflow_version: str) -> dict[str, str]:
    """What must answer on a droplet before its runner starts: name -> command."""
    checks = {"python3": "python3 --version", "rsync": "rsync --version"}
    if nextflow_version:
        checks["java"] = "java -version"
        checks["nextflow"] = "nextflow -version"
        # The runner inherits the SSH session's environment, or systemd's: the pin is in both.
        checks[f"NXF_VER={nextflow_version}"] = \
            f'test "$NXF_VER" = {shlex.quote(nextflow_version)}'
        checks[f"NXF_VER={nextflow_version} for systemd"] = (
            f"[ ! -d /run/systemd/system ] || grep -qx "
            f"{shlex.quote(f'Environment=NXF_VER={nextflow_version}')} {UNIT_DROP_IN}")
    return checks


@dataclass
class Bootstrap:
    """One droplet's readiness check, over one SSH connection."""

    what: str            # "droplet 3164494 (mf-562-0-1a2b3c)", for messages
    worker: str
    workers_root: str
    deadline_seconds: int
    nextflow_version: str
    poll_seconds: float
    sleep: Callable[[float], None] = time.sleep

    def run(self, target: remote.SshTarget, connect_timeout: float,
            boot_seconds: float) -> None:
        """Return once the user data has finished and the tools answer; else OperationError."""
        client = remote.connect(target, connect_timeout, boot_seconds)
        try:
            self.await_marker(client)
            self.check_tools(client)
        except (paramiko.SSHException, OSError, EOFError) as exc:  # e.g. it rebooted meanwhile
            raise OperationError(f"{self.what} dropped the SSH session while it was checked "
                                 f"({type(exc).__name__}: {exc})") from None
        finally:
            client.close()

    def await_marker(self, client: paramiko.SSHClient) -> None:
        marker = shlex.quote(bootstrap_marker(self.worker, self.workers_root))
        ask = (f"if [ -f {marker} ]; then echo ready; else cloud-init status 2>/dev/null || "
               "echo 'status: unknown (no cloud-init)'; fi")
        deadline = time.monotonic() + self.deadline_seconds
        waits = pauses(self.poll_seconds)
        while True:
            answer = remote.run(client, ask).strip()
            if answer == "ready":
                return
            status = answer.splitlines()[0] if answer else "no answer"
            finished = any(f"status: {word}" in answer for word in ("done", "error"))
            # cloud-init says it finished: ask once more, the marker may have come meanwhile.
            if finished and remote.run(client, ask).strip() != "ready":
                raise OperationError(
                    f"{self.what}: cloud-init finished ({status}) without writing {marker}; see "
                    "/var/log/cloud-init-output.log on a droplet made the same way")
            if time.monotonic() >= deadline:
                raise OperationError(
                    f"{self.what}: its user data did not finish within {self.deadline_seconds} "
                    f"s (cloud-init: {status}); raise MICROFETCH_DO_BOOTSTRAP_SECONDS if the "
                    "image is slow to install packages")
            self.sleep(next(waits))

    def check_tools(self, client: paramiko.SSHClient) -> None:
        script = "; ".join(f"{command} >/dev/null 2>&1 || echo {shlex.quote(name)}"
                           for name, command in tool_checks(self.nextflow_version).items())
        script += f"; [ -f {NEXTFLOW_REJECTED} ] && echo rejected; true"
        answer = remote.run(client, script, timeout=TOOL_CHECK_SECONDS)
        missing = [line.strip() for line in answer.splitlines() if line.strip()]
        if "rejected" in missing:
            raise OperationError(
                f"{self.what}: the Nextflow launcher it downloaded does not match "
                "MICROFETCH_NEXTFLOW_SHA256, so it was not installed; check the checksum "
                "against the release (docs/src/digitalocean.md)", permanent=True)
        if missing:
            raise OperationError(
                f"{self.what} finished its user data but {', '.join(missing)} does not answer; "
                "the runner was not started (check MICROFETCH_DO_IMAGE and "
                "/var/log/cloud-init-output.log)")
