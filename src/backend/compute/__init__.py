"""Compute backends: where workers run (`local`, `ssh`, `digitalocean`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.compute.base import ComputeBackend
    from backend.settings import Settings


def make_backend(settings: Settings) -> ComputeBackend:
    """The backend named by ``MICROFETCH_BACKEND``; heavy libraries load only when chosen."""
    if settings.backend == "local":
        from backend.compute.local import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "ssh":
        from backend.compute.ssh import SshBackend

        return SshBackend(settings)
    from backend.compute.digitalocean import DigitalOceanBackend

    return DigitalOceanBackend(settings)
