"""The `filter` stage: which of a taxon's runs at ENA are worth fetching.

Every rule lives here, configured by settings; an excluded run records a reason that starts
with a fixed code. Accessions and paths are validated (ASCII only) before anything uses them in
a path, a URL or a command. Only the metadata rows that checks changed since the last filter
are decided (all of them when the rules changed), so a recheck costs what changed. Runs a full
check no longer found at ENA become ``withdrawn``: their files stay at home, but they leave
the samplesheet. Re-filtering never loses a run's assignment or fetched state.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from backend.ena.client import FIELDS, Progress
from backend.ena.metadata import metadata_db, metadata_lines
from backend.logs import taxon_log
from backend.settings import Settings
from backend.state.accessions import ACCESSION, BATCH, AccessionList, Exclusion, Run, RunStatus
from backend.state.registry import Registry
from backend.state.store import Database

MD5 = re.compile(r"[0-9a-fA-F]{32}\Z", re.ASCII)
MD5S = re.compile(r"[0-9a-fA-F]{32}(?:;[0-9a-fA-F]{32})*\Z", re.ASCII)
#: `;`-joined sizes, each of ASCII digits only (as :func:`_digits`).
SIZES = re.compile(r"[0-9]+(?:;[0-9]+)*\Z", re.ASCII)
PAIRED_FILE = re.compile(r"_[12]\.f(?:ast)?q(?:\.gz)?\Z", re.ASCII)
#: Runs decided and written per database transaction.
FILTER_BATCH = 5000
#: The same for a taxon without runs yet: inserted in bulk, larger transactions cost less.
FRESH_BATCH = 20_000
PATH = re.compile(r"(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)/(?P<rest>[A-Za-z0-9._/+-]+)\Z",
                  re.ASCII)
HOST = re.compile(r"[A-Za-z0-9.-]+(?::\d{1,5})?\Z", re.ASCII)


@dataclass(frozen=True)
class Files:
    paths: tuple[str, ...]
    md5s: tuple[str, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    files: Files | None
    exclusion: Exclusion | None = None
    detail: str = ""


@dataclass
class FilterResult:
    selected: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    back_to_pending: int = 0
    withdrawn: int = 0
    decided: int = 0


def _split(value: str) -> list[str]:
    """ENA's ``;``-joined lists, which may be empty or carry a trailing separator."""
    parts = [part.strip() for part in (value or "").split(";")]
    while parts and not parts[-1]:
        parts.pop()
    return parts


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes ``²`` and other scripts' digits."""
    return text.isascii() and text.isdigit()


def choose_files(ftp: str, md5: str, sizes: str) -> Decision:
    """The files a worker fetches, each with its own MD5 and size.

    A paired run may also list an unpaired file besides ``_1`` and ``_2``: the pair is taken,
    with the MD5 and size at the pair's own positions (not the first two of the lists).
    """
    paths, md5s, byte_counts = _split(ftp), _split(md5), _split(sizes)
    if not paths or not any(paths):
        return Decision(None, Exclusion.NO_FILES, "ENA lists no FASTQ files")
    # The parts hold no `;`: one match of the joined list checks each (faster per run).
    if len(md5s) != len(paths) or not MD5S.match(";".join(md5s)):
        return Decision(None, Exclusion.NO_MD5, f"{len(paths)} files but MD5s {md5!r}")
    if len(byte_counts) != len(paths) or not SIZES.match(";".join(byte_counts)):
        return Decision(None, Exclusion.NO_FILES, f"sizes {sizes!r} do not match the files")
    picked: range | list[int] = range(len(paths))
    if len(paths) > 2:
        pair = [i for i, p in enumerate(paths) if PAIRED_FILE.search(p)]
        picked = pair if len(pair) == 2 else picked
    return Decision(Files(tuple(paths[i] for i in picked), tuple(md5s[i].lower() for i in picked),
                          tuple(int(byte_counts[i]) for i in picked)))


def check_path(path: str, hosts: tuple[str, ...]) -> Decision | None:
    """An exclusion for a path that is not a plain ``host/relative/path`` on an allowed host."""
    match = PATH.match(path)
    if not match or ".." in path.split("/") or "//" in path or path.endswith("/"):
        return Decision(None, Exclusion.BAD_PATH, f"{path!r} is not a plain host/path")
    if match["host"].lower() not in hosts:
        return Decision(None, Exclusion.HOST_NOT_ALLOWED,
                        f"{match['host']} is not in MICROFETCH_FASTQ_HOSTS")
    return None


_AT = {name: FIELDS.index(name) for name in FIELDS}
_RULES = (
    (_AT["instrument_platform"], "select_platforms", Exclusion.PLATFORM),
    (_AT["library_strategy"], "select_strategies", Exclusion.STRATEGY),
    (_AT["library_source"], "select_sources", Exclusion.SOURCE),
    (_AT["library_layout"], "select_layouts", Exclusion.LAYOUT),
)


def decide(row: Mapping[str, str], settings: Settings) -> Decision:
    """Apply every rule to one metadata row, in a fixed order; the first failing rule wins."""
    return decide_values([row.get(name) or "" for name in FIELDS], settings)


def decide_values(values: Sequence[str], settings: Settings) -> Decision:
    """:func:`decide` on a row's values in FIELDS order (as stored: no dict per run)."""
    accession = values[_AT["run_accession"]]
    if not ACCESSION.match(accession):
        return Decision(None, Exclusion.BAD_ACCESSION, f"{accession!r} is not an ERR/SRR/DRR run")
    for at, setting, code in _RULES:
        wanted = getattr(settings, setting)
        value = values[at].upper()
        if value not in wanted:
            return Decision(None, code, f"{value or 'empty'} is not {' or '.join(wanted)}")
    bases = values[_AT["base_count"]] or "0"
    if settings.min_bases and (not _digits(bases) or int(bases) < settings.min_bases):
        return Decision(None, Exclusion.MIN_BASES, f"{bases} bases < {settings.min_bases}")
    ftp, md5, sizes = values[_AT["fastq_ftp"]], values[_AT["fastq_md5"]], values[_AT["fastq_bytes"]]
    fast = _plain_files(settings.fastq_hosts).match(f"{ftp}\t{md5}\t{sizes}")
    if fast:
        first, second, md5s, counts = fast["p1"], fast["p2"], fast.group("m1", "m2"), \
            fast.group("s1", "s2")
        if second is None and md5s[1] is None and counts[1] is None:
            return Decision(Files((first,), (md5s[0].lower(),), (int(counts[0]),)))
        if (second is not None and md5s[1] is not None and counts[1] is not None
                and first.rsplit("/", 1)[1] != second.rsplit("/", 1)[1]):
            return Decision(Files((first, second), (md5s[0].lower(), md5s[1].lower()),
                                  (int(counts[0]), int(counts[1]))))
    decision = choose_files(ftp, md5, sizes)
    if decision.files is None:
        return decision
    for path in decision.files.paths:
        problem = check_path(path, settings.fastq_hosts)
        if problem:
            return problem
    names = [path.rsplit("/", 1)[-1] for path in decision.files.paths]
    if len(set(names)) < len(names):
        # Both would land in one folder under one name: the second overwrites the first.
        twice = next(name for name in names if names.count(name) > 1)
        return Decision(None, Exclusion.BAD_PATH, f"two files are named {twice!r}")
    return decision


@functools.lru_cache(maxsize=8)
def _plain_files(hosts: tuple[str, ...]) -> re.Pattern[str]:
    """One or two files, MD5s and sizes (``fastq_ftp``, ``fastq_md5`` and ``fastq_bytes``
    tab-joined) in the plain form most runs have, which :func:`choose_files`,
    :func:`check_path` and the name check would each take: paths on allowed hosts without
    ``//``, ``..`` or a trailing ``/``, no spaces or empty items. Anything else goes the long
    way. Groups p1, p2 (paths), m1, m2 (MD5s), s1, s2 (sizes)."""
    plain = [re.escape(host) for host in hosts
             if host == host.lower() and host != ".." and HOST.match(host)]
    if not plain:
        return re.compile(r"(?!)")  # no host allowed: every run goes the long way
    segment = r"(?!\.\.[/;\t])[A-Za-z0-9._+-]+"
    path = rf"(?:{'|'.join(plain)})/{segment}(?:/{segment})*"
    md5, size = r"[0-9a-fA-F]{32}", r"[0-9]+"
    return re.compile(rf"(?P<p1>{path})(?:;(?P<p2>{path}))?\t(?P<m1>{md5})(?:;(?P<m2>{md5}))?"
                      rf"\t(?P<s1>{size})(?:;(?P<s2>{size}))?\Z", re.ASCII)


def selected_elsewhere(db: Database, taxa: Sequence[int], taxon_id: int,
                       accessions: Sequence[str]) -> dict[str, int]:
    """Of these runs, those wanted under another taxon of the registry: run -> that taxon
    (the first in registry order). One indexed query per batch, not a load of every list."""
    others = {taxon: order for order, taxon in enumerate(taxa) if taxon != taxon_id}
    owners: dict[str, tuple[int, int]] = {}
    for start in range(0, len(accessions), BATCH):
        part = accessions[start:start + BATCH]
        marks = ", ".join("?" * len(part))
        for accession, taxon in db.query(
                f"SELECT accession, taxon FROM runs WHERE accession IN ({marks}) "
                f"AND is_excluded = 0 AND taxon != ?", (*part, taxon_id)):
            if taxon in others and (accession not in owners
                                    or others[taxon] < owners[accession][0]):
                owners[accession] = (others[taxon], taxon)
    return {accession: taxon for accession, (_, taxon) in owners.items()}


def filter_taxon(settings: Settings, registry: Registry, taxon_id: int, now: datetime,
                 progress: bool = False) -> FilterResult:
    """Decide the runs checks changed since the last filter and store the decisions, a batch
    at a time."""
    taxa = [row.taxonomy_id for row in registry.load()]
    if taxon_id not in taxa:
        registry.get(taxon_id)  # raises the error that names the registry
    accessions = AccessionList.of(settings, taxon_id)
    db = metadata_db(settings)
    after = filtered_mark(db, taxon_id, settings)
    # From the per-category counts, not the runs: scanning a million runs to learn that no
    # other taxon wants any would cost what is stored.
    others = bool(db.query("SELECT 1 FROM run_counts WHERE taxon != ? AND runs > 0 AND category "
                           "IN ('pending', 'assigned', 'fetched', 'failed') LIMIT 1", (taxon_id,)))
    fresh = not accessions.exists()
    result = FilterResult()
    todo = db.query("SELECT count(*), max(gen) FROM ena_metadata WHERE taxon = ? AND gen > ?",
                    (taxon_id, after))[0]
    bar = Progress(progress, todo[0], "selecting")
    try:
        for rows in metadata_lines(db, taxon_id, after, FRESH_BATCH if fresh else FILTER_BATCH):
            decided = [_decided(accession, line, listed, settings)
                       for accession, line, listed, _ in rows]
            owners = selected_elsewhere(db, taxa, taxon_id, [
                a for a, d in decided if d.files is not None]) if others else {}
            result.back_to_pending += _store(accessions, decided, owners, fresh)
            result.decided += len(rows)
            bar.update(len(rows))
    finally:
        bar.close()
    db.set_meta(f"ena_filtered:{taxon_id}", f"{todo[1] or after} {rules_hash(settings)}")
    _count(result, accessions)
    taxon_log(taxon_id).info("decided {} changed runs; selected {}, withdrawn {}, excluded {}",
                             result.decided, result.selected, result.withdrawn,
                             dict(result.excluded))
    return result


def rules_hash(settings: Settings) -> str:
    """What the decisions depend on; when it changes every run is decided again."""
    rules = (settings.select_platforms, settings.select_strategies, settings.select_sources,
             settings.select_layouts, settings.min_bases, settings.fastq_hosts)
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]


def filtered_mark(db: Database, taxon_id: int, settings: Settings) -> int:
    """The last check generation filtered under today's rules (0: decide everything)."""
    mark, _, rules = (db.meta(f"ena_filtered:{taxon_id}") or "0 ").partition(" ")
    return int(mark) if rules == rules_hash(settings) else 0


def _store(accessions: AccessionList, decided: list[tuple[str, Decision]],
           owners: dict[str, int], fresh: bool) -> int:
    """Fold a batch of decisions into the runs (one transaction); returns runs to fetch again.
    A taxon without runs yet skips the look-up of each batch's stored runs."""
    if fresh:
        try:
            accessions.insert_new(_new_rows(accessions.taxon_id, decided, owners))
            return 0
        except sqlite3.IntegrityError:
            pass  # some of these runs exist already (an earlier batch, another process)
    with accessions.edit(a for a, _ in decided) as runs:
        return _fold(runs, decided, owners)


def _new_rows(taxon_id: int, decided: list[tuple[str, Decision]],
              owners: dict[str, int]) -> list[tuple[object, ...]]:
    """NEW_COLUMNS of runs not stored yet: what :func:`_fold` makes of a new :class:`Run`
    (the last decision of an accession listed twice wins), without a Run per row."""
    rows: dict[str, tuple[object, ...]] = {}
    for accession, decision in decided:
        files = decision.files
        if files is not None and accession in owners:
            files, decision = None, Decision(None, Exclusion.DUPLICATE,
                                             f"selected under taxon {owners[accession]}")
        if files is None:
            assert decision.exclusion is not None
            category = ("withdrawn" if decision.exclusion is Exclusion.WITHDRAWN
                        else "excluded")
            rows[accession] = (taxon_id, accession, 1, decision.exclusion.reason(decision.detail),
                               "", "", "", 0, category)
        else:
            rows[accession] = (taxon_id, accession, 0, "", ";".join(files.paths),
                               ";".join(map(str, files.sizes)), ";".join(files.md5s),
                               sum(files.sizes), "pending")
    return list(rows.values())


def _fold(runs: dict[str, Run], decided: list[tuple[str, Decision]],
          owners: dict[str, int]) -> int:
    again = 0
    for accession, decision in decided:
        if decision.files is not None and accession in owners:
            decision = Decision(None, Exclusion.DUPLICATE,
                                f"selected under taxon {owners[accession]}")
        again += _apply(runs.setdefault(accession, Run(accession)), decision)
    return again


def _decided(accession: str, line: str, listed: int,
             settings: Settings) -> tuple[str, Decision]:
    if not listed:
        decision = Decision(None, Exclusion.WITHDRAWN, "ENA no longer lists this run")
    else:
        values = line.split("\t")
        decision = decide_values(values if len(values) == len(FIELDS) else
                                 (values + [""] * len(FIELDS))[:len(FIELDS)], settings)
    if decision.exclusion is Exclusion.BAD_ACCESSION or not ACCESSION.match(accession):
        accession = re.sub(r"[^\w.-]", "?", accession, flags=re.ASCII)[:40] or "?"
    return accession, decision


def _count(result: FilterResult, accessions: AccessionList) -> None:
    counts = accessions.counts()
    result.selected = sum(counts[c]["runs"] for c in ("pending", "assigned", "fetched"))
    result.withdrawn = counts["withdrawn"]["runs"]  # apart: ENA dropped them, no rule did
    # Through the category index: only excluded runs are read, not every run of the taxon.
    for code, count in accessions.db.query(
            "SELECT substr(exclusion_reason, 1, instr(exclusion_reason, ':') - 1), count(*) "
            "FROM runs WHERE taxon = ? AND category IN ('excluded', 'failed') "
            "AND is_excluded = 1 GROUP BY 1", (accessions.taxon_id,)):
        result.excluded[code] += count


def _apply(run: Run, decision: Decision) -> int:
    """Fold one decision into a run; returns 1 when a fetched run must be fetched again."""
    if run.status is RunStatus.ASSIGNED or run.exclusion_code == Exclusion.FAILED_ATTEMPTS:
        return 0  # in flight, or given up on after failures: a person decides (`retry`)
    if decision.files is None:
        assert decision.exclusion is not None
        # A fetched run keeps its state under a changed rule; a withdrawn one is marked so
        # that it leaves the samplesheet (its files stay).
        if run.status is not RunStatus.FETCHED or decision.exclusion is Exclusion.WITHDRAWN:
            run.exclude(decision.exclusion, decision.detail)
        return 0
    files = decision.files
    again = run.status is RunStatus.FETCHED and run.fastq_md5 != files.md5s
    if again:
        run.status = RunStatus.PENDING
        run.last_error = f"MD5 changed at ENA (was {';'.join(run.fastq_md5)})"
    run.include()
    run.fastq_files, run.fastq_md5, run.fastq_bytes = files.paths, files.md5s, files.sizes
    return int(again)
