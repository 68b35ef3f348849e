"""`microfetch demo --backend digitalocean`: the whole loop with droplets of the stand-in.

A rehearsal with no account: the ENA stand-in, the DigitalOcean stand-in (its droplets are
sshds on 127.0.0.N, so this needs root) and `serve` on the digitalocean backend in a temporary
folder. It stops by itself once every taxon is complete and no droplet is left (or on Ctrl-C),
then prints the cost estimates microfetch made before dispatching and the stand-in's ledger.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from backend.compute.cloudinit import generate_host_key
from backend.demo.do_standin.cloud import Cloud
from backend.demo.do_standin.server import DoStandIn
from backend.demo.ena_standin import EnaStandIn
from backend.demo.local import TAXA, demo_data, demo_settings
from backend.ena.client import taxonomy_lookup
from backend.jobs.daemon import serve
from backend.settings import Settings
from backend.state.add_taxa import add_taxa
from backend.state.registry import Registry

EXIT_NOT_ROOT = 2
WATCH_SECONDS = 2.0
MAX_DEMO_SECONDS = 1800.0


def login_key(folder: Path, cloud: Cloud) -> tuple[Path, int]:
    """A key pair for root logins on the droplets, registered with the stand-in's account."""
    key = generate_host_key()  # an ed25519 pair in OpenSSH format, as a login key needs
    path = folder / "id_ed25519"
    path.touch(mode=0o600)
    path.write_text(key.private_openssh)
    return path, int(cloud.add_ssh_key(key.public_line, "demo")["id"])


def done(registry: Registry, cloud: Cloud) -> bool:
    complete = all(registry.get(t).last_run_status.value == "complete" for t in TAXA)
    return complete and not cloud.ledger()["live"]


def stop_when_done(registry: Registry, cloud: Cloud) -> None:
    """Ask `serve` to stop (as SIGTERM does) once the demo has nothing left to do."""
    deadline = time.monotonic() + MAX_DEMO_SECONDS
    while time.monotonic() < deadline:
        time.sleep(WATCH_SECONDS)
        try:
            finished = done(registry, cloud)
        except (OSError, KeyError, ValueError):
            continue  # the registry mid-write or a taxon not yet added: look again
        if finished:
            print("every taxon complete and every droplet destroyed: stopping", flush=True)
            break
    os.kill(os.getpid(), signal.SIGTERM)


def estimates(registry: Registry) -> list[str]:
    return [f"taxon {entry['taxon']}: {entry['new']['text']}"
            for entry in registry.history(limit=10_000)
            if entry.get("field") == "cost_estimate" and isinstance(entry.get("new"), dict)]


def run_do_demo(port: int, folder: Path | None = None) -> int:
    if os.geteuid() != 0:
        print("microfetch demo --backend digitalocean needs root: its droplets are sshds on "
              "port 22 of 127.0.0.N that take root logins. Run it with sudo.")
        return EXIT_NOT_ROOT
    folder = folder or Path(tempfile.mkdtemp(prefix="microfetch-do-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    ena = EnaStandIn(demo_data()).start()
    cloud = DoStandIn(Cloud(activation_seconds=2.0, folder=folder / "cloud")).start()
    try:
        key, key_id = login_key(folder, cloud.cloud)
        settings = demo_settings(folder, ena, port, cloud.settings_env() | {
            "MICROFETCH_DO_SSH_KEYS": str(key_id), "MICROFETCH_DO_SSH_PRIVATE_KEY": str(key),
            "MICROFETCH_MAX_WORKERS": "3", "MICROFETCH_SSH_BOOT_SECONDS": "30",
            "MICROFETCH_DO_CREATE_TIMEOUT": "120"})
        registry = start_registry(settings)
        print(f"microfetch demo (digitalocean stand-in) in {folder}")
        print(f"ENA stand-in at {ena.base}, DigitalOcean stand-in at {cloud.api_url}")
        print(f"dashboard: http://127.0.0.1:{port}/  (admin token {settings.admin_token})")
        print(f"ledger meanwhile: {cloud.base}/_standin/ledger", flush=True)
        threading.Thread(target=stop_when_done, args=(registry, cloud.cloud), daemon=True,
                         name="demo-watch").start()
        code = serve(settings)
        print("\ncost estimates before dispatch:")
        print("\n".join(estimates(registry)) or "(none recorded)")
        return code
    finally:
        ena.stop()
        print("\nledger of the DigitalOcean stand-in:")
        print(cloud.stop(), flush=True)


def start_registry(settings: Settings) -> Registry:
    registry = Registry.from_settings(settings)
    registry.ensure_ready()
    add_taxa(registry, [str(t) for t in TAXA], lookup=taxonomy_lookup(settings), actor="demo")
    return registry
