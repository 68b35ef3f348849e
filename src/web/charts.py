"""The data of the "fetched over time" charts: cumulative runs and bytes, per taxon and overall.

Collections are summed into at most ``BUCKETS`` time buckets by SQLite, so a chart costs the
same however many collections there were; the browser draws it with the vendored uPlot.
"""

from __future__ import annotations

from typing import Any

from backend.state.store import Database
from backend.timeutil import parse_time

#: Points per line: enough for a smooth curve, few enough to stay small.
BUCKETS = 240
#: The overview draws the overall line and at most this many taxa (the most fetched).
TOP_TAXA = 8


def span(db: Database, taxa: list[int] | None) -> tuple[float, float] | None:
    """The first and last collection (unix seconds) of these taxa (None: every taxon)."""
    where, params = filter_of(taxa)
    row = db.query(f"SELECT min(at), max(at) FROM fetch_events {where}", params)[0]
    if row[0] is None:
        return None
    first, last = parse_time(row[0]), parse_time(row[1])
    assert first is not None and last is not None
    return first.timestamp(), last.timestamp()


def filter_of(taxa: list[int] | None) -> tuple[str, list[Any]]:
    if taxa is None:
        return "", []
    return f"WHERE taxon IN ({', '.join('?' * len(taxa))})", list(taxa)


def bucketed(db: Database, taxa: list[int] | None, start: float, width: float,
             buckets: int) -> list[tuple[int, int, int, int]]:
    """(taxon, bucket, runs, bytes) sums; bucket i ends at start + (i + 1) * width."""
    where, params = filter_of(taxa)
    return [tuple(row) for row in db.query(  # type: ignore[misc]
        "SELECT taxon, min(CAST((CAST(strftime('%s', at) AS REAL) - ?) / ? AS INTEGER), ?) "
        f"AS b, sum(runs), sum(bytes) FROM fetch_events {where} GROUP BY taxon, b ORDER BY b",
        [start, width, buckets - 1, *params])]


def most_fetched(db: Database, limit: int) -> list[int]:
    """The taxa with the most runs collected (the lines the overview draws)."""
    return [taxon for (taxon,) in db.query(
        "SELECT taxon FROM fetch_events GROUP BY taxon ORDER BY sum(runs) DESC, taxon "
        "LIMIT ?", (limit,))]


def cumulative(rows: list[tuple[int, int, int, int]], taxa: list[int], buckets: int
               ) -> dict[int, tuple[list[int], list[int]]]:
    """Running totals of runs and bytes per taxon (0 = every taxon) at each bucket's end."""
    steps = {t: ([0] * buckets, [0] * buckets) for t in [0, *taxa]}
    for taxon, bucket, runs, size in rows:
        for key in (0, taxon) if taxon in steps else (0,):
            steps[key][0][bucket] += runs
            steps[key][1][bucket] += size
    for runs, sizes in steps.values():
        for i in range(1, buckets):
            runs[i] += runs[i - 1]
            sizes[i] += sizes[i - 1]
    return steps


_cache: dict[tuple[str, int | None], tuple[tuple[Any, ...], dict[str, Any]]] = {}


def fetched_series(db: Database, names: dict[int, str], taxon: int | None = None
                   ) -> dict[str, Any]:
    """Cumulative runs and bytes fetched over time: the overall line and the top taxa, or one
    taxon's line. ``t`` is unix seconds; each series has one value per ``t``.

    Collections are only ever appended, so the series is kept until one arrives (or the names
    change): the dashboard asks often, a collection comes every few minutes.
    """
    key = (*db.query("SELECT max(id), count(*) FROM fetch_events")[0], tuple(names.items()))
    cached = _cache.get((str(db.path), taxon))
    if cached is not None and cached[0] == key:
        return cached[1]
    answer = _series(db, names, taxon)
    _cache[(str(db.path), taxon)] = (key, answer)
    return answer


def _series(db: Database, names: dict[int, str], taxon: int | None) -> dict[str, Any]:
    taxa = [taxon] if taxon is not None else most_fetched(db, TOP_TAXA)
    bounds = span(db, [taxon] if taxon is not None else None)
    if bounds is None:
        return {"t": [], "series": []}
    start, end = bounds
    buckets = BUCKETS if end > start else 1
    width = max((end - start) / buckets, 1e-9)
    rows = bucketed(db, [taxon] if taxon is not None else None, start, width, buckets)
    steps = cumulative(rows, taxa, buckets)
    times = [round(start + width * (i + 1)) for i in range(buckets)]
    series = [] if taxon is not None else [
        {"label": "all taxa", "runs": steps[0][0], "bytes": steps[0][1]}]
    for t in taxa:
        series.append({"label": f"{t} {names.get(t, '')}".strip(), "runs": steps[t][0],
                       "bytes": steps[t][1]})
    return {"t": [round(start), *times], "series": [
        s | {"runs": [0, *s["runs"]], "bytes": [0, *s["bytes"]]} for s in series]}
