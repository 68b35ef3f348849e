"""Every setting, read once from environment variables into a frozen, validated object.

Each field of :class:`Settings` names its environment variable, its meaning and its parser
in the field's metadata; the README's and the docs' settings tables are checked against
these fields by a test, so the three cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from backend.errors import SettingsError
from backend.pipeline import bundled_pipeline_dir

Parser = Callable[[str], Any]


class _Invalid(ValueError):
    """Raised by a parser with the text of what was expected."""


def _int(low: int, high: int | None = None, unit: str = "") -> Parser:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise _Invalid(f"a whole number{unit} of at least {low}{upper}")
        return value

    return parse


def _float(low: float, high: float | None = None, unit: str = "") -> Parser:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = None
        if value is None or value != value or value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise _Invalid(f"a number{unit} of at least {low}{upper}")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise _Invalid("true or false")


def _text(text: str) -> str:
    return text.strip()


def _path(text: str) -> Path:
    if not text.strip():
        raise _Invalid("a file or folder path")
    return Path(text.strip()).expanduser()


def _optional_path(text: str) -> Path | None:
    return _path(text) if text.strip() else None


def _choice(*options: str) -> Parser:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise _Invalid("one of " + ", ".join(options))
        return value

    return parse


def _words(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _upper_words(text: str) -> tuple[str, ...]:
    words = tuple(word.upper() for word in _words(text))
    if not words:
        raise _Invalid("a comma-separated list with at least one value")
    return words


_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(host.lower() for host in _words(text))
    bad = [host for host in hosts if not _HOST_PORT.match(host)]
    if bad or not hosts:
        raise _Invalid("comma-separated host or host:port names, e.g. ftp.sra.ebi.ac.uk")
    return hosts


def _url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise _Invalid("an http:// or https:// URL")
    return value


def _optional_url(text: str) -> str:
    return _url(text) if text.strip() else ""


def _bind(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid("host:port, e.g. 127.0.0.1:8000 or 0.0.0.0:8000")
    return text.strip()


def _cidr(text: str) -> str:
    if not text.strip():
        return ""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise _Invalid("an address range in CIDR form, e.g. 203.0.113.0/24") from None


def _pattern(regex: str, expected: str) -> Parser:
    def parse(text: str) -> str:
        value = text.strip()
        if value and not re.match(regex, value):
            raise _Invalid(expected)
        return value
    return parse


def _setting(env: str, default: Any, parse: Parser, help: str, shown: str | None = None,
             secret: bool = False) -> Any:
    """A dataclass field that knows its environment variable, parser and documentation.

    A ``secret`` field (a token, a URL whose path is a credential) is never shown by ``repr``.
    """
    meta = {"env": env, "parse": parse, "help": help, "shown": shown, "secret": secret}
    if isinstance(default, tuple | list):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """microfetch's configuration; build it with :func:`load_settings`."""

    # Files and logs
    csv_path: Path = _setting(
        "MICROFETCH_CSV", Path("microfetch.csv"), _path, "Path of the taxon registry.",
        shown="./microfetch.csv",
    )
    data_dir: Path = _setting(
        "MICROFETCH_DATA_DIR", Path("data"), _path,
        "Folder for ENA metadata, accession lists, genomes, staging and worker records.",
        shown="./data",
    )
    log_dir: Path | None = _setting(
        "MICROFETCH_LOG_DIR", None, _optional_path,
        "Folder for the main log and one log per taxon (`<taxon_id>.log`).",
        shown="<data dir>/logs",
    )
    db_path: Path | None = _setting(
        "MICROFETCH_DB", None, _optional_path,
        "SQLite database of runs, workers and history; keep it on a local disk (SQLite's "
        "locks are not safe on NFS or SMB).",
        shown="<data dir>/microfetch.sqlite",
    )
    export_seconds: int = _setting(
        "MICROFETCH_EXPORT_SECONDS", 300, _int(0, unit=" of seconds"),
        "The daemon rewrites a taxon's `ENA_accession_numbers/<taxon_id>.csv` and "
        "`samplesheet.csv` at most this often (and when the taxon completes).",
    )
    history_path: Path | None = _setting(
        "MICROFETCH_HISTORY", None, _optional_path,
        "JSON-lines copy of the history (time, taxon, field, old, new, actor), appended as it "
        "happens, for people who tail it; `microfetch history` queries the database.",
        shown="<data dir>/history.jsonl",
    )
    history_max_bytes: int = _setting(
        "MICROFETCH_HISTORY_MAX_BYTES", 10_000_000, _int(10_000, unit=" of bytes"),
        "Size at which the JSON-lines history is rotated (5 old files are kept).",
    )
    log_json: bool = _setting(
        "MICROFETCH_LOG_JSON", False, _bool, "Write log files as JSON lines instead of text."
    )
    log_level: str = _setting(
        "MICROFETCH_LOG_LEVEL", "INFO", _choice("debug", "info", "warning", "error"),
        "Lowest level written to the logs.",
    )
    pipeline_dir: Path | None = _setting(
        "MICROFETCH_PIPELINE_DIR", None, _optional_path,
        "Folder of the worker pipeline (`main.nf`, `bin/`) copied to each worker; by default "
        "the pipeline installed with microfetch (the `nextflow/` folder of the repository, "
        "shipped inside the wheel).",
        shown="the installed pipeline",
    )

    # ENA
    ena_portal_url: str = _setting(
        "MICROFETCH_ENA_PORTAL_URL", "https://www.ebi.ac.uk/ena/portal/api", _url,
        "Base URL of ENA's Portal API (search and count).",
    )
    ena_taxonomy_url: str = _setting(
        "MICROFETCH_ENA_TAXONOMY_URL", "https://www.ebi.ac.uk/ena/taxonomy/rest", _url,
        "Base URL of ENA's taxonomy service (used to check new ids).",
    )
    ena_tax_match: str = _setting(
        "MICROFETCH_ENA_TAX_MATCH", "tree", _choice("tree", "eq"),
        "`tree` asks for the taxon and all its descendants (`tax_tree`), `eq` for the "
        "taxon alone (`tax_eq`).",
    )
    ena_timeout: float = _setting(
        "MICROFETCH_ENA_TIMEOUT", 60.0, _float(1, unit=" of seconds"),
        "Connect and read timeout of each ENA request, in seconds.",
    )
    ena_retries: int = _setting(
        "MICROFETCH_ENA_RETRIES", 5, _int(0, 20),
        "Retries of an ENA request after 429, 5xx, a dropped connection or a timeout.",
    )
    ena_max_rps: float = _setting(
        "MICROFETCH_ENA_MAX_RPS", 10.0, _float(0.1, 49, unit=" of requests per second"),
        "Most requests per second sent to ENA (ENA refuses over 50).",
    )
    outage_backoff_seconds: float = _setting(
        "MICROFETCH_OUTAGE_BACKOFF_SECONDS", 60.0, _float(1, unit=" of seconds"),
        "When ENA's portal (or the file host) is unreachable, checks (or new workers) of "
        "every taxon pause this long, doubling with each failed try.",
    )
    outage_backoff_max_seconds: float = _setting(
        "MICROFETCH_OUTAGE_BACKOFF_MAX_SECONDS", 3600.0, _float(1, unit=" of seconds"),
        "Longest pause while ENA's portal or the file host stays unreachable.",
    )
    ena_min_rows_per_second: float = _setting(
        "MICROFETCH_ENA_MIN_ROWS_PER_SECOND", 500.0, _float(1, unit=" of rows per second"),
        "Slowest acceptable ENA answer: a search answer must arrive within "
        "`MICROFETCH_ENA_TIMEOUT` plus its counted rows at this rate, else it is cut off.",
    )
    ena_count_drift: float = _setting(
        "MICROFETCH_ENA_COUNT_DRIFT", 0.001, _float(0, 1, unit=" (a fraction)"),
        "How far an answer's rows may differ from ENA's count (a fraction of the count; ENA "
        "changes while a large taxon is read) before the answer is asked for again.",
    )
    ena_full_check_days: float = _setting(
        "MICROFETCH_ENA_FULL_CHECK_DAYS", 30.0, _float(0, unit=" of days"),
        "Every this many days a check asks for all of a taxon's runs, not only recent "
        "changes, and marks runs ENA no longer lists as `withdrawn` (0: every check).",
    )
    ena_no_files_recheck_days: float = _setting(
        "MICROFETCH_ENA_NO_FILES_RECHECK_DAYS", 7.0, _float(0, unit=" of days"),
        "Runs excluded as `no_files` are asked about again this often, by accession, as ENA "
        "may list their FASTQ files later without changing `last_updated`.",
    )

    # Selection
    select_platforms: tuple[str, ...] = _setting(
        "MICROFETCH_SELECT_PLATFORMS", ("ILLUMINA",), _upper_words,
        "Wanted `instrument_platform` values, comma-separated.",
    )
    select_strategies: tuple[str, ...] = _setting(
        "MICROFETCH_SELECT_STRATEGIES", ("WGS",), _upper_words,
        "Wanted `library_strategy` values, comma-separated.",
    )
    select_sources: tuple[str, ...] = _setting(
        "MICROFETCH_SELECT_SOURCES", ("GENOMIC",), _upper_words,
        "Wanted `library_source` values, comma-separated.",
    )
    select_layouts: tuple[str, ...] = _setting(
        "MICROFETCH_SELECT_LAYOUTS", ("PAIRED",), _upper_words,
        "Wanted `library_layout` values, comma-separated.",
    )
    min_bases: int = _setting(
        "MICROFETCH_MIN_BASES", 0, _int(0, unit=" of bases"),
        "Runs with a smaller `base_count` are excluded (`min_bases`).",
    )
    fastq_hosts: tuple[str, ...] = _setting(
        "MICROFETCH_FASTQ_HOSTS", ("ftp.sra.ebi.ac.uk",), _hosts,
        "Hosts (`host` or `host:port`, comma-separated) FASTQ paths may point to.",
    )
    fastq_scheme: str = _setting(
        "MICROFETCH_FASTQ_SCHEME", "https", _choice("https", "http", "ftp"),
        "Scheme of the URLs workers download from.",
    )

    # Workers and collection
    backend: str = _setting(
        "MICROFETCH_BACKEND", "local", _choice("local", "ssh", "digitalocean"),
        "Where workers run: `local` (this machine), `ssh` (your hosts) or `digitalocean`.",
    )
    max_workers: int = _setting(
        "MICROFETCH_MAX_WORKERS", 2, _int(1, 1000),
        "Most live workers at once, across all taxa (the budget guard).",
    )
    max_attempts: int = _setting(
        "MICROFETCH_MAX_ATTEMPTS", 3, _int(1, 100),
        "Failed fetches of one run before it is excluded with `failed_attempts`.",
    )
    retry_failed_after_hours: float = _setting(
        "MICROFETCH_RETRY_FAILED_AFTER_HOURS", 24.0, _float(0, unit=" of hours"),
        "A run excluded after failed attempts gets another round this long after.",
    )
    retry_failed_rounds: int = _setting(
        "MICROFETCH_RETRY_FAILED_ROUNDS", 1, _int(0, 100),
        "How many such rounds at most (0: never); then it stays excluded with its reason.",
    )
    chunk_max_runs: int = _setting(
        "MICROFETCH_CHUNK_MAX_RUNS", 200, _int(1),
        "Most runs in one chunk (one worker).",
    )
    worker_disk_gb: float = _setting(
        "MICROFETCH_WORKER_DISK_GB", 100.0, _float(0.001, unit=" of GB"),
        "Disk of a local or SSH worker, in GB; DigitalOcean uses the size's disk.",
    )
    disk_headroom: float = _setting(
        "MICROFETCH_DISK_HEADROOM", 0.2, _float(0, 0.9),
        "Fraction of a disk kept free, on workers and at home.",
    )
    rsync_timeout: int = _setting(
        "MICROFETCH_RSYNC_TIMEOUT", 300, _int(5, unit=" of seconds"),
        "rsync I/O timeout: a transfer that moves nothing this long fails and is resumed later.",
    )
    collect_while_fetching: bool = _setting(
        "MICROFETCH_COLLECT_WHILE_FETCHING", False, _bool,
        "Bring finished runs home while their worker still fetches the rest (and free its "
        "disk of them), so a worker's disk holds only the work in flight.",
    )
    worker_max_age_hours: float = _setting(
        "MICROFETCH_WORKER_MAX_AGE_HOURS", 48.0, _float(0.01, unit=" of hours"),
        "A worker older than this is flagged in `needs_attention`.",
    )
    start_deadline_minutes: float = _setting(
        "MICROFETCH_START_DEADLINE_MINUTES", 30.0, _float(1, unit=" of minutes"),
        "A worker still starting after this long is flagged in `needs_attention`.",
    )
    collect_deadline_hours: float = _setting(
        "MICROFETCH_COLLECT_DEADLINE_HOURS", 6.0, _float(0.01, unit=" of hours"),
        "A finished worker not collected within this long is flagged in `needs_attention`.",
    )
    orphan_grace_seconds: int = _setting(
        "MICROFETCH_ORPHAN_GRACE_SECONDS", 900, _int(0, unit=" of seconds"),
        "A live worker without a record is left alone this long before it is destroyed.",
    )

    # What workers bring home
    worker_products: str = _setting(
        "MICROFETCH_WORKER_PRODUCTS", "reads", _choice("reads", "assembly", "both"),
        "What a worker brings home: `reads` (the FASTQ files), `assembly` (contigs and their "
        "report; reads deleted on the worker once assembled) or `both`.",
    )
    assembler: str = _setting(
        "MICROFETCH_ASSEMBLER", "skesa", _choice("skesa", "megahit"),
        "Assembler run on the worker after fastp trimming (Debian packages of the same name).",
    )
    min_contig: int = _setting(
        "MICROFETCH_MIN_CONTIG", 200, _int(1, unit=" of bases"),
        "Contigs shorter than this are dropped from an assembly.",
    )
    assembly_min_total_length: int = _setting(
        "MICROFETCH_ASSEMBLY_MIN_TOTAL_LENGTH", 0, _int(0, unit=" of bases"),
        "An assembly shorter than this in total is recorded as failed (0: no limit).",
    )
    assembly_min_n50: int = _setting(
        "MICROFETCH_ASSEMBLY_MIN_N50", 0, _int(0, unit=" of bases"),
        "An assembly with a smaller N50 is recorded as failed (0: no limit).",
    )
    assembly_reads_on_failure: bool = _setting(
        "MICROFETCH_ASSEMBLY_READS_ON_FAILURE", True, _bool,
        "With `assembly`: a run whose assembly fails brings its reads home instead.",
    )
    assembly_threads: int = _setting(
        "MICROFETCH_ASSEMBLY_THREADS", 0, _int(0, 256),
        "Cores per assembly on a worker (0: all of the worker's cores, one assembly at a time).",
    )
    assembly_memory_gb: float = _setting(
        "MICROFETCH_ASSEMBLY_MEMORY_GB", 0.0, _float(0, unit=" of GB"),
        "Memory per assembly on a worker (0: three quarters of its RAM, at most 32).",
    )
    assembly_mb_per_core_minute: float = _setting(
        "MICROFETCH_ASSEMBLY_MB_PER_CORE_MINUTE", 20.0, _float(0.01, unit=" of MB"),
        "Reads one core assembles in a minute (MB of FASTQ), for the cost estimate.",
    )

    # Daemon and web
    bind: str = _setting(
        "MICROFETCH_BIND", "127.0.0.1:8000", _bind, "Address the web server listens on."
    )
    callback_url: str = _setting(
        "MICROFETCH_CALLBACK_URL", "", _optional_url,
        "Base URL workers call back to.", shown="http://<MICROFETCH_BIND>",
    )
    heartbeat_seconds: int = _setting(
        "MICROFETCH_HEARTBEAT_SECONDS", 60, _int(1, unit=" of seconds"),
        "Interval of the heartbeat job that advances the due taxon.",
    )
    collect_seconds: int = _setting(
        "MICROFETCH_COLLECT_SECONDS", 60, _int(1, unit=" of seconds"),
        "Interval of the collector job.",
    )
    reconcile_seconds: int = _setting(
        "MICROFETCH_RECONCILE_SECONDS", 300, _int(1, unit=" of seconds"),
        "Interval of the reconciler job.",
    )
    recheck_hours: float = _setting(
        "MICROFETCH_RECHECK_HOURS", 24.0, _float(0, unit=" of hours"),
        "A complete taxon is checked against ENA again after this long.",
    )
    taxon_backoff_seconds: float = _setting(
        "MICROFETCH_TAXON_BACKOFF_SECONDS", 300.0, _float(1, unit=" of seconds"),
        "A taxon whose pass failed for a transient cause (ENA answering for others) waits "
        "this long before its next turn, doubling with each failure; other taxa go meanwhile.",
    )
    taxon_backoff_max_seconds: float = _setting(
        "MICROFETCH_TAXON_BACKOFF_MAX_SECONDS", 21600.0, _float(1, unit=" of seconds"),
        "Longest wait of a taxon whose passes keep failing for transient causes.",
    )
    shutdown_grace_seconds: int = _setting(
        "MICROFETCH_SHUTDOWN_GRACE_SECONDS", 30, _int(1, unit=" of seconds"),
        "On SIGTERM, how long running jobs get to finish.",
    )
    admin_token: str = _setting(
        "MICROFETCH_ADMIN_TOKEN", "", _text,
        "Token for admin actions in the web app; when empty they are disabled.", secret=True,
    )
    behind_proxy: bool = _setting(
        "MICROFETCH_BEHIND_PROXY", False, _bool,
        "Trust one TLS reverse proxy's X-Forwarded-* headers (HTTPS cookies, client address).",
    )
    alert_webhook: str = _setting(
        "MICROFETCH_ALERT_WEBHOOK", "", _optional_url,
        "Slack-compatible webhook told when a taxon needs attention.", secret=True,
    )

    # SSH hosts
    ssh_hosts: tuple[str, ...] = _setting(
        "MICROFETCH_SSH_HOSTS", (), _words,
        "For the `ssh` backend: comma-separated `user@host[:port]`.",
    )
    ssh_key: Path | None = _setting(
        "MICROFETCH_SSH_KEY", None, _optional_path,
        "Private key for the `ssh` backend's hosts.",
    )
    ssh_known_hosts: Path | None = _setting(
        "MICROFETCH_SSH_KNOWN_HOSTS", None, _optional_path,
        "known_hosts file pinning the `ssh` backend's host keys (OpenSSH format).",
    )
    ssh_workers_per_host: int = _setting(
        "MICROFETCH_SSH_WORKERS_PER_HOST", 1, _int(1, 100),
        "Most workers at once on one SSH host.",
    )
    ssh_remote_dir: str = _setting(
        "MICROFETCH_SSH_REMOTE_DIR", "microfetch-workers", _text,
        "Folder on a remote host (relative to the login's home) holding worker folders.",
    )
    ssh_connect_timeout: int = _setting(
        "MICROFETCH_SSH_CONNECT_TIMEOUT", 15, _int(1, unit=" of seconds"),
        "Timeout of one SSH connection attempt.",
    )
    ssh_boot_seconds: int = _setting(
        "MICROFETCH_SSH_BOOT_SECONDS", 300, _int(1, unit=" of seconds"),
        "How long to keep retrying while a host boots before giving up.",
    )

    # DigitalOcean
    do_token: str = _setting(
        "DIGITALOCEAN_TOKEN", "", _text, "DigitalOcean API token (read and write).",
        secret=True,
    )
    do_api_url: str = _setting(
        "MICROFETCH_DO_API_URL", "https://api.digitalocean.com/v2", _url,
        "Base URL of DigitalOcean's API v2 (every API call goes there; a stand-in for rehearsals).",
    )
    do_region: str = _setting("MICROFETCH_DO_REGION", "lon1", _text, "Droplet region slug.")
    do_size: str = _setting("MICROFETCH_DO_SIZE", "s-2vcpu-4gb", _text, "Droplet size slug.")
    do_image: str = _setting("MICROFETCH_DO_IMAGE", "debian-12-x64", _text, "Droplet image slug.")
    do_ssh_keys: tuple[str, ...] = _setting(
        "MICROFETCH_DO_SSH_KEYS", (), _words,
        "Comma-separated DigitalOcean SSH key ids or fingerprints put on each droplet.",
    )
    do_ssh_private_key: Path | None = _setting(
        "MICROFETCH_DO_SSH_PRIVATE_KEY", None, _optional_path,
        "Private key matching `MICROFETCH_DO_SSH_KEYS`.",
    )
    do_http_timeout: float = _setting(
        "MICROFETCH_DO_HTTP_TIMEOUT", 30.0, _float(1, unit=" of seconds"),
        "Timeout of each DigitalOcean API request.",
    )
    do_create_timeout: int = _setting(
        "MICROFETCH_DO_CREATE_TIMEOUT", 600, _int(10, unit=" of seconds"),
        "How long to wait for a new droplet to become active.",
    )
    do_daily_spend_cap: float = _setting(
        "MICROFETCH_DO_DAILY_SPEND_CAP", 20.0, _float(0, unit=" of US dollars"),
        "No new droplets once the estimate of today's spend reaches this (USD).",
    )
    do_list_lag_seconds: int = _setting(
        "MICROFETCH_DO_LIST_LAG_SECONDS", 60, _int(0, unit=" of seconds"),
        "After an unclear answer to a create (5xx, timeout, dropped connection), how long to "
        "look for the droplet by its worker tag before creating again (listings lag creation).",
    )
    do_limit_wait_seconds: int = _setting(
        "MICROFETCH_DO_LIMIT_WAIT_SECONDS", 300, _int(1, unit=" of seconds"),
        "After DigitalOcean refuses a droplet for the account's droplet limit, no new droplet "
        "is asked for this long (the runs wait, nothing is parked).",
    )
    do_bootstrap_seconds: int = _setting(
        "MICROFETCH_DO_BOOTSTRAP_SECONDS", 900, _int(1, unit=" of seconds"),
        "How long to wait for a droplet's user data to finish (its marker file) before the "
        "droplet is given up.",
    )
    do_ssh_from: str = _setting(
        "MICROFETCH_DO_SSH_FROM", "", _cidr,
        "When set (a CIDR such as `203.0.113.0/24`), a Cloud Firewall lets SSH reach this "
        "install's droplets only from that range.",
    )
    install_id: str = _setting(
        "MICROFETCH_INSTALL_ID", "", _pattern(r"^[a-z0-9][a-z0-9-]{0,39}$",
                                              "lower-case letters, digits and dashes (at most "
                                              "40), e.g. lab-prod"),
        "Names this installation in its droplets' tags (`mf-install-<id>`); the reaper touches "
        "only droplets of its own install. By default generated once and kept in that file.",
        shown="<data dir>/install_id",
    )
    nextflow_version: str = _setting(
        "MICROFETCH_NEXTFLOW_VERSION", "25.10.0",
        _pattern(r"^\d+\.\d+\.\d+(-edge)?$", "a Nextflow version such as 25.10.0 (or empty)"),
        "Nextflow version installed on droplets and exported there as `NXF_VER` (the pipeline "
        "needs 25.10.0 or newer); empty: no Nextflow (the chunk runner fetches with Python).",
    )
    nextflow_sha256: str = _setting(
        "MICROFETCH_NEXTFLOW_SHA256", "", _pattern(r"^[0-9a-fA-F]{64}$", "64 hex digits"),
        "SHA-256 of that version's Nextflow launcher; when set, a droplet whose download "
        "differs installs no Nextflow and is refused.",
    )
    egress_price_per_gib: float = _setting(
        "MICROFETCH_EGRESS_PRICE_PER_GIB", 0.01, _float(0, unit=" of US dollars"),
        "Price of outbound transfer beyond a droplet's allowance (USD per GiB).",
    )
    fetch_mbps: float = _setting(
        "MICROFETCH_FETCH_MBPS", 50.0, _float(0.1, unit=" of MB/s"),
        "Expected download throughput of a worker, used for cost estimates.",
    )

    def __post_init__(self) -> None:
        # Derived defaults: computed once so every reader sees the same paths.
        if self.log_dir is None:
            object.__setattr__(self, "log_dir", self.data_dir / "logs")
        if self.history_path is None:
            object.__setattr__(self, "history_path", self.data_dir / "history.jsonl")
        if self.db_path is None:
            object.__setattr__(self, "db_path", self.data_dir / "microfetch.sqlite")
        if not self.callback_url:
            host, _, port = self.bind.rpartition(":")
            host = "127.0.0.1" if host in {"0.0.0.0", "::", "[::]"} else host
            object.__setattr__(self, "callback_url", f"http://{host}:{port}")
        if self.pipeline_dir is None:
            object.__setattr__(self, "pipeline_dir", bundled_pipeline_dir())

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: secrets show only whether they are set.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = hidden(value) if f.metadata.get("secret") else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, the demo)."""
        return replace(self, **changes)


def hidden(value: Any) -> str:
    """How a secret setting is shown: whether it is set, never its text."""
    return "'<set>'" if value else "''"


def setting_specs() -> list[dict[str, Any]]:
    """Name, default as shown to a person, and meaning of every setting (for docs)."""
    specs = []
    for f in fields(Settings):
        meta = f.metadata
        default = meta["shown"] if meta["shown"] is not None else _show(f.default)
        specs.append(
            {"field": f.name, "env": meta["env"], "default": default, "help": meta["help"]}
        )
    return specs


def _show(value: Any) -> str:
    if value is None or value == "" or value == ():
        return "(empty)"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "false" if not value else "true"
    return str(value)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting; one SettingsError lists every bad variable at once."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Settings):
        name = f.metadata["env"]
        if name not in environ:
            continue
        raw = environ[name]
        try:
            values[f.name] = f.metadata["parse"](raw)
        except _Invalid as expected:
            problems.append(f"{name}={raw!r} is not valid: expected {expected}")
    if problems:
        raise SettingsError(
            "bad setting: " + "; ".join(problems)
            + ". Fix the environment variable and start again."
        )
    return Settings(**values)
