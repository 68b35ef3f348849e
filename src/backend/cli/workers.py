"""Commands about workers and their data: `collect`, `retry`, `workers`."""

from __future__ import annotations

import argparse
import json

from backend.errors import EXIT_FAILED, EXIT_OK, UsageError
from backend.settings import Settings
from backend.state.exports import export_taxon
from backend.state.registry import Registry, default_actor
from backend.state.workers import WorkerStore
from backend.timeutil import format_time, relative, utc_now


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    """One collection pass by hand; acts on parked taxa too, and says so."""
    from backend.collection.collect import Collector
    from backend.compute import make_backend

    registry = Registry.from_settings(settings)
    rows = [registry.get(args.id)] if args.id else registry.load()
    for row in rows:
        if row.needs_attention:
            print(f"note: taxon {row.taxonomy_id} needs attention ({row.needs_attention}); "
                  "collecting anyway because you asked")
    report = Collector.build(settings, make_backend(settings)).collect(args.id, force=True)
    for taxon_id in sorted(report.taxa):  # the files a person may look at next, now
        export_taxon(settings, taxon_id)
    for name in report.collected:
        print(f"collected {name}")
    for name in report.lost:
        print(f"worker {name} had stopped before finishing: its runs are pending again")
    for name in report.held:
        print(f"kept {name}: its data failed verification (see `microfetch status`)")
    for error in report.errors:
        print(f"error: {error}")
    print(f"{len(report.collected)} workers collected, {report.runs_fetched} runs fetched "
          f"({report.bytes_fetched} bytes), {report.runs_failed} runs failed, "
          f"{len(report.held)} kept for a person")
    return EXIT_FAILED if report.held or report.errors else EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from backend.state.admin import Admin, Interface, actor

    count = Admin(settings, actor(Interface.CLI, default_actor())).retry(args.id)
    print(f"{count} runs of taxon {args.id} are pending again")
    return EXIT_OK


def cmd_workers_list(args: argparse.Namespace, settings: Settings) -> int:
    records = WorkerStore.of(settings).live()
    if getattr(args, "json", False):
        print(json.dumps([{
            "name": r.name, "taxon": r.taxon_id, "backend": r.backend, "phase": r.phase.value,
            "address": r.address, "droplet_id": r.droplet_id, "runs": r.runs,
            "bytes": r.bytes, "created_at": format_time(r.created_at)} for r in records],
            indent=2))
        return EXIT_OK
    if not records:
        print("No live workers.")
        return EXIT_OK
    now = utc_now()
    lines = [("name", "taxon", "backend", "address", "age", "state")] + [
        (r.name, str(r.taxon_id), r.backend, r.address or "-",
         relative(r.created_at, now).removesuffix(" ago"), r.phase.value)
        for r in records
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_workers_destroy(args: argparse.Namespace, settings: Settings) -> int:
    """Destroy one worker now; its unfetched runs go back to pending."""
    from backend.compute import make_backend
    from backend.jobs.reconcile import close_record
    from backend.state.attempts import Cause

    store = WorkerStore.of(settings)
    record = store.get(args.name)
    if record is None:
        raise UsageError(f"no worker named {args.name}; `microfetch workers` lists them")
    make_backend(settings).destroy(record)
    close_record(settings, store, Registry.from_settings(settings), record,
                 f"destroyed by hand ({default_actor()})", Cause.BY_HAND)
    print(f"destroyed {args.name}; its unfetched runs are pending again")
    return EXIT_OK


def cmd_workers_reap(args: argparse.Namespace, settings: Settings) -> int:
    """Reconcile now, destroying orphans without waiting for the grace period."""
    from backend.compute import make_backend
    from backend.jobs.reconcile import reconcile

    report = reconcile(settings, make_backend(settings), WorkerStore.of(settings),
                       Registry.from_settings(settings), utc_now(), grace=0)
    for name in report.destroyed:
        print(f"destroyed orphan {name}")
    print(report)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, taxon_id: object) -> None:
    """Register the commands of this module on the top-level parser."""
    collect = sub.add_parser("collect", help="collect finished workers now (one pass)")
    collect.add_argument("id", nargs="?", type=taxon_id, help="only this taxon")
    collect.set_defaults(func=cmd_collect, preflight=True)

    retry = sub.add_parser("retry", help="put a taxon's failed runs back to pending")
    retry.add_argument("id", type=taxon_id)
    retry.set_defaults(func=cmd_retry)

    workers = sub.add_parser("workers", help="list live workers")
    workers.add_argument("--json", action="store_true", help="JSON for scripts")
    workers.set_defaults(func=cmd_workers_list)
    actions = workers.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="list live workers (the default)")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    listing.set_defaults(func=cmd_workers_list)
    destroy = actions.add_parser("destroy", help="destroy a worker now (runs go back)")
    destroy.add_argument("name", help="a worker name, mf-<taxon>-<chunk>-<6 hex>")
    destroy.set_defaults(func=cmd_workers_destroy)
    actions.add_parser("reap", help="destroy orphan workers now").set_defaults(
        func=cmd_workers_reap
    )
