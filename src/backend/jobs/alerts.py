"""Alerts: tell a webhook when a taxon comes to need attention, once per reason."""

from __future__ import annotations

from pathlib import Path

import requests
from loguru import logger

from backend.logs import elide_url, scrub
from backend.state.registry import Registry
from backend.state.statefile import locked, read_json, write_json

TIMEOUT_SECONDS = 10


def alert_text(taxon_id: int, name: str, reason: str) -> str:
    label = f"{taxon_id} ({name})" if name else str(taxon_id)
    return f"microfetch: taxon {label} needs attention: {reason}"


def send_alerts(registry: Registry, state_path: Path, webhook: str) -> list[int]:
    """POST ``{"text": ...}`` for each new ``needs_attention`` reason; returns the taxa told.

    The reasons already sent are kept in ``state_path`` so a restart does not repeat them;
    a failed POST is logged and tried again on the next pass.
    """
    if not webhook:
        return []
    told = []
    with locked(state_path):
        before: dict[str, str] = read_json(state_path) if state_path.exists() else {}
        sent = dict(before)
        current = {str(r.taxonomy_id): r for r in registry.load()}
        for key, row in current.items():
            if not row.needs_attention or sent.get(key) == row.needs_attention:
                continue
            if _post(webhook, alert_text(row.taxonomy_id, row.scientific_name,
                                         row.needs_attention)):
                sent[key] = row.needs_attention
                told.append(row.taxonomy_id)
        kept = {k: v for k, v in sent.items() if k in current and current[k].needs_attention}
        # Runs after every job: rewrite (and fsync) only a change, or a file not made yet.
        if kept != before or not state_path.exists():
            write_json(state_path, kept)
    return told


def _post(webhook: str, text: str) -> bool:
    try:
        response = requests.post(webhook, json={"text": text}, timeout=TIMEOUT_SECONDS)
        response.raise_for_status()
    except requests.RequestException as exc:
        # The webhook's path is its credential: requests quotes it in its errors.
        logger.warning("alert webhook {} failed ({}: {}); tried again at the next pass",
                       elide_url(webhook), type(exc).__name__, scrub(str(exc), webhook))
        return False
    return True
