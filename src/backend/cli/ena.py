"""`microfetch fetch ID`: check and filter one taxon by hand."""

from __future__ import annotations

import argparse
import sys

from backend.errors import EXIT_OK
from backend.settings import Settings
from backend.state.exports import export_taxon
from backend.state.registry import Registry
from backend.timeutil import utc_now


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    """Check ENA and filter one taxon; prints what was seen and selected."""
    from backend.ena.metadata import refresh_metadata_export
    from backend.jobs import stages

    registry = Registry.from_settings(settings)
    row = registry.get(args.id)
    if row.needs_attention:
        print(f"note: taxon {args.id} needs attention ({row.needs_attention}); "
              "fetching anyway because you asked")
    now = utc_now()
    show = sys.stdout.isatty()  # bars and phase lines for a person, not for a pipe
    phase(show, f"taxon {args.id}: asking ENA")
    check = stages.check(settings, registry, args.id, now, progress=show)
    phase(show, f"taxon {args.id}: selecting among {check.new + check.changed + check.withdrawn} "
                "new, changed or withdrawn runs")
    result = stages.select(settings, registry, args.id, now, progress=show)
    phase(show, f"taxon {args.id}: writing the exports")
    refresh_metadata_export(settings, args.id, force=True)
    export_taxon(settings, args.id)
    print(f"taxon {args.id}: asked ENA for {check.query!r}")
    for warning in check.warnings:
        print(f"warning: {warning}")
    print(f"runs seen {check.seen}, new {check.new}, changed {check.changed}, "
          f"stored {check.total}")
    print(f"selected {result.selected}, excluded {sum(result.excluded.values())}, "
          f"withdrawn {result.withdrawn} (decided {result.decided} new or changed runs)")
    for code, count in sorted(result.excluded.items()):
        print(f"  excluded {code}: {count}")
    if result.back_to_pending:
        print(f"{result.back_to_pending} fetched runs changed at ENA and will be fetched again")
    return EXIT_OK


def phase(show: bool, text: str) -> None:
    """A line saying what the command is doing now, on stderr beside the bars."""
    if show:
        print(f"{text}…", file=sys.stderr, flush=True)


def add_parsers(sub: argparse._SubParsersAction, taxon_id: object) -> None:
    fetch = sub.add_parser("fetch", help="check ENA and select runs for one taxon now")
    fetch.add_argument("id", type=taxon_id)
    fetch.set_defaults(func=cmd_fetch, preflight=True)
