"""Server-rendered SVG: runs fetched over time, one cumulative line per taxon (no CDN)."""

from __future__ import annotations

from datetime import datetime
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


def runs_over_time(series: dict[str, list[tuple[datetime, int]]], width: int = 760,
                   height: int = 220) -> str:
    """A cumulative step line of fetched runs per label; a short note when there is none.

    Each series is (moment, runs fetched so far) points, oldest first.
    """
    points = [t for steps in series.values() for t, _ in steps]
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40" '
                'role="img"><text x="8" y="24" font-size="13">No runs fetched yet.</text></svg>')
    pad, legend = 40, 170
    start, end = min(points), max(points)
    span = max((end - start).total_seconds(), 1.0)
    top = max((count for steps in series.values() for _, count in steps), default=1) or 1

    def xy(moment: datetime, count: int) -> str:
        x = pad + (width - pad - legend) * (moment - start).total_seconds() / span
        y = height - pad - (height - 2 * pad) * count / top
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="runs fetched over time">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - legend}" y2="{height - pad}" '
             'stroke="#888"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="4" y="{pad}" font-size="11">{top}</text>',
             f'<text x="{pad}" y="{height - 12}" font-size="11">{start:%Y-%m-%d %H:%M}</text>',
             f'<text x="{width - legend}" y="{height - 12}" font-size="11" text-anchor="end">'
             f'{end:%Y-%m-%d %H:%M}</text>']
    for index, (label, steps) in enumerate(sorted(series.items())):
        colour = PALETTE[index % len(PALETTE)]
        coords, previous = [xy(start, 0)], 0
        for moment, count in steps:
            coords += [xy(moment, previous), xy(moment, count)]
            previous = count
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{" ".join(coords)}"><title>{escape(label)}</title></polyline>')
        parts.append(f'<text x="{width - legend + 8}" y="{pad + 14 * index}" font-size="11" '
                     f'fill="{colour}">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
