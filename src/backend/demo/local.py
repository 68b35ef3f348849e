"""`microfetch demo`: the whole loop on this machine within a minute, no network, no account.

Starts the ENA stand-in with a few small taxa, then `serve` on the local backend in a
temporary folder, and prints the dashboard URL and an admin token. The data and settings
here are shared with ``--backend digitalocean`` (``demo/do_standin/demo.py``), whose workers
are droplets of the DigitalOcean stand-in.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from backend.demo.ena_standin import EnaData, EnaStandIn, make_run
from backend.ena.client import taxonomy_lookup
from backend.jobs.daemon import serve
from backend.settings import Settings, load_settings
from backend.state.add_taxa import add_taxa
from backend.state.registry import Registry

TAXA = {562: "Escherichia coli", 1280: "Staphylococcus aureus", 1639: "Listeria monocytogenes"}


def demo_data() -> EnaData:
    """A few small taxa: paired runs, a three-file run, and runs selection leaves out."""
    data = EnaData()
    data.names.update(TAXA)
    for offset, taxon in enumerate(TAXA):
        base = 100000 * (offset + 1)
        for i in range(6):
            make_run(data, taxon, f"ERR{base + i:07d}", reads=2000, files=3 if i == 0 else 2)
        make_run(data, taxon, f"ERR{base + 90:07d}", platform="PACBIO_SMRT", files=1)
        make_run(data, taxon, f"ERR{base + 91:07d}", layout="SINGLE", files=1)
    return data


def demo_settings(folder: Path, ena: EnaStandIn, port: int,
                  extra: dict[str, str] | None = None) -> Settings:
    env = ena.settings_env() | {
        "MICROFETCH_CSV": str(folder / "microfetch.csv"),
        "MICROFETCH_DATA_DIR": str(folder / "data"),
        "MICROFETCH_BIND": f"127.0.0.1:{port}",
        "MICROFETCH_HEARTBEAT_SECONDS": "3", "MICROFETCH_COLLECT_SECONDS": "3",
        "MICROFETCH_RECONCILE_SECONDS": "15", "MICROFETCH_CHUNK_MAX_RUNS": "2",
        "MICROFETCH_MAX_WORKERS": "2", "MICROFETCH_ADMIN_TOKEN": secrets.token_urlsafe(16),
    } | (extra or {})
    return load_settings(env)


def run_demo(port: int, folder: Path | None = None) -> int:
    folder = folder or Path(tempfile.mkdtemp(prefix="microfetch-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    ena = EnaStandIn(demo_data()).start()
    try:
        settings = demo_settings(folder, ena, port)
        registry = Registry.from_settings(settings)
        registry.ensure_ready()
        add_taxa(registry, [str(t) for t in TAXA], lookup=taxonomy_lookup(settings),
                 actor="demo")
        print(f"microfetch demo in {folder}")
        print(f"ENA stand-in at {ena.base}")
        print(f"dashboard: http://127.0.0.1:{port}/")
        print(f"admin token: {settings.admin_token}")
        print("Ctrl-C to stop.", flush=True)
        return serve(settings)
    finally:
        ena.stop()
