"""`microfetch fetch ID`: check and filter one taxon by hand."""

from __future__ import annotations

import argparse

from backend.errors import EXIT_OK
from backend.exports import export_taxon
from backend.registry import Registry
from backend.settings import Settings
from backend.timeutil import utc_now


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    """Check ENA and filter one taxon; prints what was seen and selected."""
    from backend.fetch_accession_links import check_taxon
    from backend.parse_fetched_data import filter_taxon

    registry = Registry.from_settings(settings)
    row = registry.get(args.id)
    if row.needs_attention:
        print(f"note: taxon {args.id} needs attention ({row.needs_attention}); "
              "fetching anyway because you asked")
    now = utc_now()
    check = check_taxon(settings, registry, args.id, now)
    result = filter_taxon(settings, registry, args.id, now)
    export_taxon(settings, args.id)
    print(f"taxon {args.id}: asked ENA for {check.query!r}")
    print(f"runs seen {check.seen}, new {check.new}, changed {check.changed}, "
          f"stored {check.total}")
    print(f"selected {result.selected}, excluded {sum(result.excluded.values())}")
    for code, count in sorted(result.excluded.items()):
        print(f"  excluded {code}: {count}")
    if result.back_to_pending:
        print(f"{result.back_to_pending} fetched runs changed at ENA and will be fetched again")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, taxon_id: object) -> None:
    fetch = sub.add_parser("fetch", help="check ENA and select runs for one taxon now")
    fetch.add_argument("id", type=taxon_id)
    fetch.set_defaults(func=cmd_fetch, preflight=True)
