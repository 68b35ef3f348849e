"""What a droplet carries to be found again: its worker, its installation, its host-key pin.

``mf-worker-<name>`` is unique to one worker, so a droplet made before its answer was lost is
found by it; ``mf-install-<id>`` keeps two installations on one account apart; and
``mf-hostkey-<hash>`` says which pinned key the droplet was made with, so that of two droplets of
one worker only the one home can trust is adopted.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from backend.settings import Settings
from backend.state.statefile import create_once
from backend.state.workers import WorkerRecord

TAG = "microfetch"
WORKER_TAG, INSTALL_TAG, KEY_TAG = "mf-worker-", "mf-install-", "mf-hostkey-"


def worker_tag(name: str) -> str:
    return WORKER_TAG + name


def install_tag(install: str) -> str:
    return INSTALL_TAG + install


def key_tag(public_line: str) -> str:
    """Which pinned host key a droplet was made with: a short hash of the public key."""
    return KEY_TAG + hashlib.sha256(public_line.strip().encode()).hexdigest()[:16]


def droplet_tags(record: WorkerRecord, install: str) -> list[str]:
    return [TAG, f"{TAG}-taxon-{record.taxon_id}", f"{TAG}-chunk-{record.chunk}",
            worker_tag(record.name), install_tag(install), key_tag(record.host_key)]


def has_install_tag(tags: tuple[str, ...]) -> bool:
    """False for droplets made before install ids existed."""
    return any(tag.startswith(INSTALL_TAG) for tag in tags)


def install_id(settings: Settings) -> str:
    """``MICROFETCH_INSTALL_ID``, else the id kept in ``<data dir>/install_id`` (made once).

    The file is linked into place, so two processes starting at once agree on one id.
    """
    if settings.install_id:
        return settings.install_id
    path = Path(settings.data_dir) / "install_id"
    if not path.exists():
        create_once(path, secrets.token_hex(6) + "\n")  # another process first: its id wins
    return path.read_text().strip()
