"""How the pages write times, sizes, durations and money: for people, with the exact value
at hand (``<time datetime=… title=…>``), the same way the page's script rewrites them."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from backend.timeutil import parse_time, utc_now

UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def size(value: int | float | None) -> str:
    """Bytes in decimal units, three significant digits: ``1.23 GB``."""
    if not value:
        return "0 B"
    for unit, scale in UNITS:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def duration(seconds: int | float | None) -> str:
    """``2 d 3 h``, ``4 h 5 min``, ``6 min``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def eta(seconds: int | None) -> str:
    """Time left: ``nothing left``, a duration, or ``unknown`` when nothing moved lately."""
    if seconds is None:
        return "unknown: nothing fetched in the last hour"
    return "nothing left" if seconds == 0 else duration(seconds)


def ago(moment: datetime, now: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "in " + duration(-seconds)
    return "just now" if seconds < 10 else duration(seconds) + " ago"


def when(text: str | None, never: str = "never") -> Markup:
    """A ``<time>`` element: relative text, the exact UTC time on hover."""
    try:
        moment = parse_time(text or "")
    except ValueError:
        return Markup(escape(text))
    if moment is None:
        return Markup(escape(never))
    exact = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup(f'<time datetime="{iso}" title="{exact}">'
                  f"{escape(ago(moment, utc_now()))}</time>")


def money(value: float | None) -> str:
    return "–" if value is None else f"${value:,.2f}"


def install(app: Flask) -> None:
    """Register the filters on the app's templates."""
    app.jinja_env.filters.update(size=size, duration=duration, eta=eta, when=when, money=money)
