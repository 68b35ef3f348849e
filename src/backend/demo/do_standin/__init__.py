"""A DigitalOcean stand-in on this machine, for tests, rehearsals and `microfetch demo`.

Built the way :mod:`backend.demo.ena_standin` built ENA: a real HTTP server on 127.0.0.1 speaking
the part of API v2 that microfetch uses (:mod:`.server`), droplets that are real sshds on
their own loopback addresses (:mod:`.machines`), a ledger of what the droplets would have cost
(:mod:`.ledger`), and faults on demand (:mod:`.cloud`).
"""

from __future__ import annotations

from backend.demo.do_standin.cloud import SIZES, ApiError, Cloud
from backend.demo.do_standin.ledger import LedgerEntry, billed_hours, ledger, render
from backend.demo.do_standin.server import DoStandIn, apply_fault

__all__ = ["SIZES", "ApiError", "Cloud", "DoStandIn", "LedgerEntry", "apply_fault",
           "billed_hours", "ledger", "render"]
