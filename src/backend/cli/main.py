"""The command line: `microfetch <command>` and `add_taxa.py`.

Only this module picks exit codes: 0 success, 2 bad input or usage, 1 a failed operation.
Heavy libraries (pandas, flask, paramiko) are imported inside the commands that need them,
so that `add_taxa.py` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from backend import __version__
from backend.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, MicrofetchError, UsageError
from backend.preflight import preflight
from backend.settings import Settings, load_settings
from backend.state.admin import Admin, Interface, actor
from backend.state.registry import Registry, Taxon, default_actor, parse_taxon_id
from backend.state.store import database_of
from backend.timeutil import relative, utc_now

Command = Callable[[argparse.Namespace, Settings], int]


def _taxon_id(text: str) -> int:
    try:
        return parse_taxon_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"taxonomy id {exc}") from None


def _registry(settings: Settings) -> Registry:
    registry = Registry.from_settings(settings)
    if registry.ensure_ready():
        print(f"created a new registry {registry.path.resolve()} (MICROFETCH_CSV chooses "
              "another)", file=sys.stderr)
    return registry


def _setup_logs(settings: Settings, console: bool = False) -> None:
    from backend.logs import setup_logging

    assert settings.log_dir is not None
    setup_logging(settings.log_dir, json=settings.log_json, level=settings.log_level,
                  console=console)


# add-taxa ---------------------------------------------------------------------------------


def _add_add_taxa_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", metavar="ID", help="NCBI taxonomy ids to add")
    parser.add_argument("--priority", type=int, default=0, help="priority of new taxa (default 0)")
    parser.add_argument(
        "--offline", action="store_true", help="do not look the ids up in ENA's taxonomy"
    )


def cmd_add_taxa(args: argparse.Namespace, settings: Settings) -> int:
    """Add taxa; one line per id, then a summary; exit 2 when any id was rejected."""
    from backend.state.add_taxa import add_taxa, summary

    given = list(args.ids) + list(getattr(args, "extra", []))
    if not given:
        raise UsageError(
            "no taxonomy ids given; usage: add_taxa.py ID [ID ...], e.g. add_taxa.py 562"
        )
    registry = _registry(settings)
    lookup = None if args.offline else _taxonomy_lookup(settings)
    outcomes = add_taxa(registry, given, priority=args.priority, lookup=lookup)
    for outcome in outcomes:
        print(outcome.line(), file=sys.stderr if outcome.result == "rejected" else sys.stdout)
    print(summary(outcomes))
    return EXIT_USAGE if any(o.result == "rejected" for o in outcomes) else EXIT_OK


def _taxonomy_lookup(settings: Settings) -> Callable[[int], str]:
    """ENA's taxonomy look-up (requests is imported only when it is needed)."""
    from backend.ena.client import taxonomy_lookup

    return taxonomy_lookup(settings)


# status -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    rows = registry.load()
    if args.ids:
        known = {row.taxonomy_id: row for row in rows}
        missing = [taxon for taxon in args.ids if taxon not in known]
        if missing:
            raise UsageError(
                f"taxon {', '.join(map(str, missing))} is not in the registry {registry.path}; "
                "run `microfetch status` to see every taxon"
            )
        rows = [known[taxon] for taxon in args.ids]
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(format_table(rows))
    return EXIT_OK


def format_table(rows: Sequence[Taxon]) -> str:
    """A readable table of registry rows."""
    if not rows:
        return "The registry is empty. Add taxa with `add_taxa.py ID [ID ...]`."
    now = utc_now()
    header = ("taxon", "name", "stage", "status", "last checked", "workers", "priority",
              "needs attention")
    lines = [header] + [
        (
            str(row.taxonomy_id),
            _clip(row.scientific_name, 30),
            row.stage.value,
            row.last_run_status.value or "new",
            relative(row.last_checked, now),
            str(len(row.droplet_ips)),
            str(row.priority),
            _clip(row.needs_attention, 50),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# admin ------------------------------------------------------------------------------------


def _admin(settings: Settings) -> Admin:
    """Admin actions as the person at this terminal, through the CLI."""
    _registry(settings)
    return Admin(settings, actor(Interface.CLI, default_actor()))


def cmd_attention(args: argparse.Namespace, settings: Settings) -> int:
    admin = _admin(settings)
    if args.action == "set":
        admin.park(args.id, args.reason)
        print(f"taxon {args.id} parked: {' '.join(args.reason.split())}")
    else:
        was = admin.clear(args.id)
        print(f"taxon {args.id} released" + (f" (was: {was})" if was else " (it was not parked)"))
    return EXIT_OK


def cmd_priority(args: argparse.Namespace, settings: Settings) -> int:
    old = _admin(settings).set_priority(args.id, args.priority)
    print(f"taxon {args.id} priority {old} -> {args.priority}")
    return EXIT_OK


def cmd_remove_taxa(args: argparse.Namespace, settings: Settings) -> int:
    _admin(settings).remove(args.ids)
    for taxon_id in args.ids:
        print(f"removed {taxon_id} from the registry")
    print(f"files under {settings.data_dir} were kept (metadata, accession lists, genomes)")
    return EXIT_OK


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """The newest history entries (of one taxon), oldest first, from the database."""
    registry = _registry(settings)
    if args.id is not None:
        registry.get(args.id)  # an unknown id is an error, not an empty answer
    entries = registry.history(args.id, limit=args.limit)
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print("No history yet.")
    for entry in entries:
        old, new = (_clip(json.dumps(entry[k]) if not isinstance(entry[k], str) else entry[k],
                          60) for k in ("old", "new"))
        print(f"{entry['time']}  {entry['taxon'] or '-'}  {entry['field']}: {old} -> {new}  "
              f"({entry['actor']})")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The daemon and the web server, until SIGTERM or SIGINT."""
    from backend.jobs.daemon import serve

    _registry(settings)
    _setup_logs(settings, console=True)
    return serve(settings)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The ENA stand-in and `serve` on the local backend (or the DigitalOcean stand-in's
    droplets) in a temporary folder."""
    from backend.logs import setup_logging

    folder = args.folder.resolve() if args.folder else None
    if folder is not None:
        setup_logging(folder / "data" / "logs", console=True)
    if args.backend == "digitalocean":
        from backend.demo.do_standin.demo import run_do_demo

        return run_do_demo(args.port, folder)
    from backend.demo.local import run_demo

    return run_demo(args.port, folder)


def cmd_tick(args: argparse.Namespace, settings: Settings) -> int:
    """One heartbeat pass, one collection pass and one reconciliation, in the foreground."""
    from backend.jobs.heartbeat import Jobs

    _registry(settings)
    _setup_logs(settings)
    jobs = Jobs.build(settings)
    print(f"heartbeat: {jobs.heartbeat()}")
    print(f"collector: {jobs.collect()}")
    print(f"reconciler: {jobs.reconcile()}")
    return EXIT_OK


def cmd_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    """GET /healthz of the local server: exit 0 when healthy (Docker's HEALTHCHECK)."""
    import urllib.error
    import urllib.request

    host, _, port = settings.bind.rpartition(":")
    host = "127.0.0.1" if host in {"0.0.0.0", "", "::", "[::]"} else host
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            print(response.read().decode("utf-8", "replace"))
            return EXIT_OK
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}: {exc.read().decode('utf-8', 'replace')}",
              file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url} did not answer ({exc}); is `microfetch serve` running?",
              file=sys.stderr)
    return EXIT_FAILED


# parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microfetch", description="Keep a local copy of ENA sequencing runs up to date."
    )
    parser.add_argument("--version", action="version", version=f"microfetch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = sub.add_parser("add-taxa", help="add taxonomy ids to the registry")
    _add_add_taxa_arguments(add)
    add.set_defaults(func=cmd_add_taxa)

    status = sub.add_parser("status", help="show the registry")
    status.add_argument("ids", nargs="*", type=_taxon_id, metavar="ID")
    status.add_argument("--json", action="store_true", help="typed JSON instead of a table")
    status.set_defaults(func=cmd_status)

    attention = sub.add_parser("attention", help="park or release a taxon by hand")
    att_sub = attention.add_subparsers(dest="action", required=True, metavar="ACTION")
    att_set = att_sub.add_parser("set", help="park a taxon: the daemon leaves it alone")
    att_set.add_argument("id", type=_taxon_id)
    att_set.add_argument("--reason", required=True, help="why a person must look")
    att_clear = att_sub.add_parser("clear", help="release a parked taxon")
    att_clear.add_argument("id", type=_taxon_id)
    attention.set_defaults(func=cmd_attention)

    priority = sub.add_parser("priority", help="change a taxon's priority (higher goes first)")
    priority.add_argument("id", type=_taxon_id)
    priority.add_argument("priority", type=int)
    priority.set_defaults(func=cmd_priority)

    history = sub.add_parser("history", help="what changed, when and by whom")
    history.add_argument("id", nargs="?", type=_taxon_id, metavar="ID", help="one taxon")
    history.add_argument("--limit", type=int, default=50, help="newest entries (50)")
    history.add_argument("--json", action="store_true", help="JSON for scripts")
    history.set_defaults(func=cmd_history)

    remove = sub.add_parser("remove-taxa", help="remove taxa from the registry (files are kept)")
    remove.add_argument("ids", nargs="+", type=_taxon_id, metavar="ID")
    remove.set_defaults(func=cmd_remove_taxa)

    from backend.cli import ena as cli_ena
    from backend.cli import workers as cli_workers

    cli_ena.add_parsers(sub, _taxon_id)
    cli_workers.add_parsers(sub, _taxon_id)

    tick = sub.add_parser("tick", help="run each job once in the foreground (cron, debugging)")
    tick.set_defaults(func=cmd_tick, preflight=True)

    health = sub.add_parser("healthcheck", help="exit 0 when the local server is healthy")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    health.set_defaults(func=cmd_healthcheck)

    demo = sub.add_parser("demo", help="the whole loop on this machine, no network needed")
    demo.add_argument("--port", type=int, default=8000, help="dashboard port (8000)")
    demo.add_argument("--folder", type=Path, help="where to keep the demo (a temp folder)")
    demo.add_argument("--backend", choices=("local", "digitalocean"), default="local",
                      help="workers as local folders (default) or droplets of a DigitalOcean "
                           "stand-in on this machine (needs root; ends with the ledger)")
    demo.set_defaults(func=cmd_demo, preflight=True)

    serve = sub.add_parser("serve", help="run the daemon and the web server")
    serve.set_defaults(func=cmd_serve)
    return parser


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
         allow_extra: bool = False) -> int:
    args, extra = parser.parse_known_args(argv)
    if extra and not (allow_extra or getattr(args, "func", None) is cmd_add_taxa):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # add-taxa: things that look like options are ids to reject
    try:
        settings = load_settings()
        if getattr(args, "preflight", False):
            preflight(settings)
        if args.func not in (cmd_serve, cmd_demo, cmd_healthcheck):
            _setup_logs(settings)  # logs go to files; the console gets plain lines
        # Opening the database brings an older data directory into it, whatever the command
        # that reads or writes state: not the demo (its own temporary folder) nor Docker's
        # healthcheck (an HTTP request every few seconds).
        if args.func not in (cmd_demo, cmd_healthcheck):
            database_of(settings).connection()
        return args.func(args, settings)
    except MicrofetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `microfetch`."""
    return _run(build_parser(), argv)


def add_taxa_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `add_taxa.py ID...`."""
    parser = argparse.ArgumentParser(
        prog="add_taxa.py", description="Add NCBI taxonomy ids to the microfetch registry."
    )
    parser.add_argument("--version", action="version", version=f"microfetch {__version__}")
    _add_add_taxa_arguments(parser)
    parser.set_defaults(func=cmd_add_taxa)
    return _run(parser, argv, allow_extra=True)


def console_main() -> None:
    sys.exit(main())


def console_add_taxa() -> None:
    sys.exit(add_taxa_main())
