"""What the overview shows: totals, throughput, ETAs, live workers, spend, ENA health and what
needs attention first. Every number comes from a small indexed query (never a scan of runs),
so the dashboard can ask for it every few seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backend.settings import Settings
from backend.state.accessions import CATEGORIES
from backend.state.circuit import circuit_status
from backend.state.store import Database, database_of
from backend.state.workers import Phase, WorkerRecord, WorkerStore
from backend.timeutil import format_time

#: Throughput (and so every ETA) is measured over this window.
WINDOW = timedelta(hours=1)
#: The ETA table lists at most this many taxa (those nearest to done first).
ETA_ROWS = 25
#: Indexes that find cost estimates without reading the whole history.
HISTORY_INDEXES = """
CREATE INDEX IF NOT EXISTS web_history_by_field_time ON history (field, time);
CREATE INDEX IF NOT EXISTS web_history_by_field_taxon ON history (field, taxon, id);
"""


def totals(db: Database) -> dict[str, int]:
    """Runs per category over every taxon, bytes home and bytes still to fetch."""
    found = {c: (0, 0) for c in CATEGORIES}
    for category, runs, size in db.query(
            "SELECT category, sum(runs), sum(bytes) FROM run_counts GROUP BY category"):
        found[category] = (runs or 0, size or 0)
    to_go = ("pending", "assigned")
    return {**{c: found[c][0] for c in CATEGORIES},
            "runs_to_go": sum(found[c][0] for c in to_go),
            "bytes_home": found["fetched"][1],
            "bytes_to_go": sum(found[c][1] for c in to_go)}


def recent_fetches(db: Database, now: datetime) -> dict[int, tuple[int, int]]:
    """(runs, bytes) collected per taxon within the window."""
    since = format_time(now - WINDOW)
    return {taxon: (runs, size) for taxon, runs, size in db.query(
        "SELECT taxon, sum(runs), sum(bytes) FROM fetch_events WHERE at >= ? GROUP BY taxon",
        (since,))}


def eta_seconds(runs_to_go: int, bytes_to_go: int, runs_done: int, bytes_done: int
                ) -> int | None:
    """Seconds left at the window's pace; None when nothing moved in the window."""
    if runs_to_go == 0:
        return 0
    if bytes_to_go and bytes_done:
        return math.ceil(bytes_to_go / bytes_done * WINDOW.total_seconds())
    if runs_done:
        return math.ceil(runs_to_go / runs_done * WINDOW.total_seconds())
    return None


def to_go_by_taxon(db: Database) -> dict[int, tuple[int, int]]:
    return {taxon: (runs, size) for taxon, runs, size in db.query(
        "SELECT taxon, sum(runs), sum(bytes) FROM run_counts "
        "WHERE category IN ('pending', 'assigned') GROUP BY taxon HAVING sum(runs) > 0")}


def etas(db: Database, names: dict[int, str], recent: dict[int, tuple[int, int]]
         ) -> list[dict[str, Any]]:
    """Taxa with runs still to fetch, the soonest done first, then the largest."""
    rows = []
    for taxon, (runs, size) in to_go_by_taxon(db).items():
        done_runs, done_bytes = recent.get(taxon, (0, 0))
        rows.append({"taxonomy_id": taxon, "scientific_name": names.get(taxon, ""),
                     "runs_to_go": runs, "bytes_to_go": size, "runs_last_hour": done_runs,
                     "bytes_last_hour": done_bytes,
                     "eta_seconds": eta_seconds(runs, size, done_runs, done_bytes)})
    rows.sort(key=lambda r: (r["eta_seconds"] is None, r["eta_seconds"] or 0,
                             -r["bytes_to_go"]))
    return rows[:ETA_ROWS]


def estimates_since(db: Database, since: datetime) -> list[dict[str, Any]]:
    rows = db.query("SELECT new FROM history WHERE field = 'cost_estimate' AND time >= ? "
                    "AND batch IS NULL", (format_time(since),))
    return [value for (text,) in rows if isinstance(value := json.loads(text or "null"), dict)]


def spend(db: Database, settings: Settings, now: datetime) -> dict[str, Any]:
    """Today's (UTC) estimated spend: the sum of today's dispatch estimates, and the cap."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    found = estimates_since(db, midnight)
    today = round(sum(float(e.get("total", 0) or 0) for e in found), 2)
    cap = float(settings.do_daily_spend_cap)
    return {"today": today, "cap": cap, "estimates": len(found),
            "percent": round(100 * today / cap, 1) if cap else 0.0}


def last_cost_estimate(db: Database, taxon_id: int) -> dict[str, Any] | None:
    """The taxon's last dispatch estimate (what it moves and, where it bills, costs)."""
    db.ensure(HISTORY_INDEXES)
    row = db.query("SELECT new FROM history WHERE field = 'cost_estimate' AND taxon = ? "
                   "AND batch IS NULL ORDER BY id DESC LIMIT 1", (taxon_id,))
    value = json.loads(row[0][0] or "null") if row else None
    return value if isinstance(value, dict) else None


def hourly_price(db: Database, taxon_id: int) -> float | None:
    """The droplet price per hour of the taxon's last cost estimate (None: no billing)."""
    value = last_cost_estimate(db, taxon_id)
    if value is None or not value.get("hours") or "droplet_cost" not in value:
        return None
    return float(value["droplet_cost"]) / float(value["hours"])


def runs_done(db: Database, record: WorkerRecord) -> int:
    """Runs of the chunk already home, or, once it called back, the runs it fetched."""
    if record.callback and isinstance(record.callback.get("runs_ok"), int):
        return int(record.callback["runs_ok"])
    # `worker != ''` lets SQLite use the partial index runs_by_worker.
    return int(db.query("SELECT count(*) FROM runs WHERE worker = ? AND worker != '' "
                        "AND category = 'fetched'", (record.name,))[0][0])


def worker_row(db: Database, record: WorkerRecord, now: datetime,
               prices: dict[int, float | None]) -> dict[str, Any]:
    age = max(0, int((now - record.created_at).total_seconds()))
    if record.taxon_id not in prices:
        prices[record.taxon_id] = hourly_price(db, record.taxon_id)
    price = prices[record.taxon_id]
    # Droplets bill by the started hour, one hour at least.
    cost = round(max(1, math.ceil(age / 3600)) * price, 2) if price is not None else None
    return {"name": record.name, "taxonomy_id": record.taxon_id, "backend": record.backend,
            "phase": record.phase.value, "runs": len(record.runs),
            "runs_done": runs_done(db, record), "bytes": record.bytes,
            "created_at": format_time(record.created_at), "age_seconds": age,
            "cost_so_far": cost, "last_error": record.last_error}


def services(settings: Settings, now: datetime) -> dict[str, dict[str, Any]]:
    """The outside services' circuits (ENA's portal, the file host), as the backend keeps them."""
    return circuit_status(settings, now)


def ena_health(settings: Settings, states: list[dict[str, Any]], now: datetime
               ) -> dict[str, Any]:
    """ENA as the daemon sees it: each service's circuit, and the taxa whose last pass ended
    in an error or a warning."""
    problems = [{"taxonomy_id": s["taxonomy_id"], "scientific_name": s["scientific_name"],
                 "status": s["state"], "problem": s["last_error"] or s["needs_attention"],
                 "last_checked": s["last_checked"]}
                for s in states if s["state"] in ("error", "warning")]
    checked = [s["last_checked"] for s in states if s["last_checked"]]
    return {"services": services(settings, now), "last_check": max(checked, default=""),
            "problems": problems[:ETA_ROWS], "problem_count": len(problems)}


@dataclass(frozen=True)
class Attention:
    """One thing a person should do, why, and what clears it."""

    rank: int
    taxonomy_id: int | None
    reason: str
    command: str
    action: str = ""   # the taxon page's form action that clears it, if any

    def to_json(self) -> dict[str, Any]:
        return {"taxonomy_id": self.taxonomy_id, "reason": self.reason,
                "command": self.command, "action": self.action}


def taxon_attention(state: dict[str, Any]) -> list[Attention]:
    taxon, name = state["taxonomy_id"], state["scientific_name"]
    label = f"{taxon} {name}".strip()
    found = []
    if state["needs_attention"]:
        found.append(Attention(0, taxon, f"{label} is parked, the daemon leaves it alone: "
                               f"{state['needs_attention']}",
                               f"microfetch attention clear {taxon}", "clear"))
    elif state["state"] == "error":
        found.append(Attention(1, taxon, f"{label}: the last pass failed: "
                               f"{state['last_error'] or 'see its log'}",
                               f"microfetch fetch {taxon}"))
    if state["runs"]["failed"]:
        found.append(Attention(4, taxon, f"{label}: {state['runs']['failed']} runs failed "
                               "every attempt and are left out",
                               f"microfetch retry {taxon}", "retry"))
    if state["state"] == "warning" and not state["needs_attention"]:
        found.append(Attention(5, taxon, f"{label}: warning: "
                               f"{state['last_error'] or 'see its log'}",
                               f"microfetch fetch {taxon}"))
    return found


def attention(states: list[dict[str, Any]], live: list[WorkerRecord],
              money: dict[str, Any], outside: dict[str, dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """What needs a person, most urgent first, each with the reason and what clears it."""
    found = [item for state in states for item in taxon_attention(state)]
    for circuit in outside.values():
        if circuit["state"] != "closed":
            # An outage is waited out, not fixed: say so, so nobody restarts the daemon.
            found.append(Attention(1, None, f"{circuit['summary']}: work that needs it waits",
                                   "nothing to run: it is tried again by itself "
                                   "(microfetch serve keeps going)"))
    for record in live:
        if record.phase == Phase.HELD:
            found.append(Attention(2, record.taxon_id, f"worker {record.name} is held: its "
                                   "files failed verification at home "
                                   f"({record.last_error or 'see the log'})",
                                   f"microfetch workers destroy {record.name}"))
    if money["estimates"] and money["today"] >= money["cap"]:
        found.append(Attention(3, None, f"today's estimated spend ${money['today']:.2f} "
                               f"reached the cap ${money['cap']:.2f}: no new droplet starts "
                               "before midnight UTC",
                               "raise MICROFETCH_DO_DAILY_SPEND_CAP, or wait"))
    found.sort(key=lambda a: (a.rank, a.taxonomy_id or 0))
    return [a.to_json() for a in found]


def overview(settings: Settings, states: list[dict[str, Any]], now: datetime
             ) -> dict[str, Any]:
    """Everything the overview shows, as the JSON API gives it."""
    db = database_of(settings)
    db.ensure(HISTORY_INDEXES)
    recent = recent_fetches(db, now)
    all_totals = totals(db)
    runs_hour = sum(r for r, _ in recent.values())
    bytes_hour = sum(b for _, b in recent.values())
    live = WorkerStore.of(settings).live()
    prices: dict[int, float | None] = {}
    money = spend(db, settings, now)
    names = {s["taxonomy_id"]: s["scientific_name"] for s in states}
    ena = ena_health(settings, states, now)
    return {
        "now": format_time(now),
        "totals": all_totals,
        "throughput": {"window_seconds": int(WINDOW.total_seconds()), "runs": runs_hour,
                       "bytes": bytes_hour,
                       "bytes_per_second": round(bytes_hour / WINDOW.total_seconds(), 1)},
        "eta_seconds": eta_seconds(all_totals["runs_to_go"], all_totals["bytes_to_go"],
                                   runs_hour, bytes_hour),
        "taxa_eta": etas(db, names, recent),
        "workers": [worker_row(db, r, now, prices) for r in live],
        "spend": money,
        "ena": ena,
        "attention": attention(states, live, money, ena["services"]),
    }
