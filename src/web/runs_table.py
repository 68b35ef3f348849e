"""A taxon's runs, one page at a time: keyset paging on (sort key, seq), never a deep OFFSET.

A cursor is the ``seq`` of the page's last run; its sort value is looked up by primary key, so
page 20,000 of a million-run taxon costs what page 1 costs: one index range scan of ``limit``
rows. The indexes it needs are created here on
first use (``CREATE INDEX IF NOT EXISTS``), once per database per process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from backend.state.store import Database

#: What a column is sorted by: the SQL expression (an indexed column of ``runs``).
SORTS = {"accession": "accession", "status": "category", "size": "total_bytes",
         "attempts": "attempts", "fetched": "fetched_at", "order": "seq"}
#: Every sort but ``order`` (the rowid) needs an index on (taxon, key, seq); (taxon, category,
#: seq) and (taxon, accession) are in the store's schema. An older release made a copy of the
#: first here, which every write to ``runs`` paid for.
INDEXES = """
CREATE INDEX IF NOT EXISTS web_runs_by_size ON runs (taxon, total_bytes, seq);
CREATE INDEX IF NOT EXISTS web_runs_by_attempts ON runs (taxon, attempts, seq);
CREATE INDEX IF NOT EXISTS web_runs_by_fetched ON runs (taxon, fetched_at, seq);
DROP INDEX IF EXISTS web_runs_by_category;
"""
PAGE_SIZES = (25, 50, 100, 200)
#: Up to this many runs matching a search are sorted after a range scan of the accession
#: index; beyond it the sort index is walked instead (see prefix_terms).
SORTED_MATCHES = 5000
MAX_PREFIX = 40
COLUMNS = ("seq, accession, category, status, is_excluded, exclusion_reason, fastq_files, "
           "fastq_bytes, total_bytes, attempts, last_error, fetched_at, worker")

#: Why a run is left out, in words, by the code its ``exclusion_reason`` starts with.
EXCLUSION_WORDS = {
    "platform": "sequenced on a platform not in MICROFETCH_SELECT_PLATFORMS",
    "strategy": "a library strategy not in MICROFETCH_SELECT_STRATEGIES (e.g. not WGS)",
    "source": "a library source not in MICROFETCH_SELECT_SOURCES (e.g. not genomic)",
    "layout": "a library layout not in MICROFETCH_SELECT_LAYOUTS (e.g. single-end reads)",
    "no_files": "ENA lists no FASTQ file for it",
    "no_md5": "ENA gives no MD5 checksum, so a download could not be verified",
    "min_bases": "fewer bases than MICROFETCH_MIN_BASES",
    "bad_accession": "not an ERR, SRR or DRR run accession",
    "bad_path": "a FASTQ path ENA gave is not a safe relative path",
    "host_not_allowed": "a FASTQ URL points to a host outside the allowed ENA hosts",
    "too_large": "larger than a worker's disk holds",
    "duplicate": "already selected under another taxon, which fetches it",
    "failed_attempts": "failed too many times; `microfetch retry` puts it back",
    "withdrawn": "withdrawn or suppressed at ENA since it was listed",
}

class BadQuery(ValueError):
    """A sort, cursor, page size or search the runs table cannot take."""


def explain_exclusion(reason: str) -> str:
    """``layout: SINGLE`` → the code's sentence, then the detail ENA gave."""
    code, _, detail = reason.partition(":")
    words = EXCLUSION_WORDS.get(code.strip())
    if words is None:
        return reason
    return f"{words} ({detail.strip()})" if detail.strip() else words


@dataclass(frozen=True)
class Query:
    """What the viewer asked for: sort, direction, accession prefix, page size, cursor."""

    sort: str = "order"
    descending: bool = False
    prefix: str = ""
    limit: int = 50
    after: int | None = None


def parse_query(args: dict[str, str]) -> Query:
    """A :class:`Query` from URL parameters; :class:`BadQuery` names what is wrong."""
    sort = args.get("sort", "order")
    if sort not in SORTS:
        raise BadQuery(f"sort must be one of {', '.join(SORTS)}")
    order = args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadQuery("order must be asc or desc")
    prefix = args.get("q", "").upper()
    if len(prefix) > MAX_PREFIX or not all(c.isascii() and c.isalnum() for c in prefix):
        raise BadQuery(f"q must be the start of an accession: letters and digits, at most "
                       f"{MAX_PREFIX}")
    try:
        limit = int(args.get("limit", "50"))
    except ValueError:
        limit = 0
    if limit not in PAGE_SIZES:
        raise BadQuery(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    after = parse_cursor(args["after"]) if "after" in args else None
    return Query(sort, order == "desc", prefix, limit, after)


def parse_cursor(text: str) -> int:
    """A cursor is the ``seq`` of the previous page's last run: a whole number."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 1 <= int(text) <= 2**62:
        raise BadQuery("after must be the `next` of the previous page (a whole number)")
    return int(text)


class GoneCursor(LookupError):
    """The run a cursor names is no longer in the taxon: start again from the first page."""


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str
    query: Query = Query()   # what was shown: a search of too many runs is by accession
    note: str = ""


def runs_page(db: Database, taxon_id: int, query: Query) -> Page:
    """One page of a taxon's runs, and the cursor of the next page (empty on the last)."""
    db.ensure(INDEXES)
    note = ""
    if too_many_to_sort(db, taxon_id, query):
        note = (f"More than {SORTED_MATCHES:,} runs start with {query.prefix}: they are shown "
                f"by accession; a longer search can be sorted by {query.sort}.")
        query = replace(query, sort="accession")
    key = SORTS[query.sort]
    where, params = ["taxon = ?"], [taxon_id]
    if query.prefix:
        # A range on the (taxon, accession) index: the prefix never becomes a LIKE scan.
        where.append("accession >= ? AND accession < ?")
        params += [query.prefix, query.prefix + "\U0010ffff"]
    want = query.limit + 1
    if query.after is None:
        rows = select(db, where, params, key, query.descending, want)
    else:
        rows = after_cursor(db, where, params, key, query, taxon_id, want)
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    cursor = str(rows[-1]["seq"]) if more and rows else ""
    return Page([run_json(row) for row in rows], cursor, query, note)


def too_many_to_sort(db: Database, taxon_id: int, query: Query) -> bool:
    """Whether more runs start with the searched prefix than a page may sort.

    A rare prefix is a short range of the (taxon, accession) index, sorted afterwards. A
    common one ("SRR1" in a million runs) would sort hundreds of thousands of rows, and
    walking the sort index instead can read most of the taxon when the matches cluster (they
    do: accessions follow the order ENA listed them). Such a search is shown by accession.
    """
    if not query.prefix or query.sort == "accession":
        return False
    found = db.query("SELECT count(*) FROM (SELECT 1 FROM runs WHERE taxon = ? AND "
                     "accession >= ? AND accession < ? LIMIT ?)",
                     (taxon_id, query.prefix, query.prefix + "\U0010ffff", SORTED_MATCHES + 1))
    return bool(found[0][0] > SORTED_MATCHES)


def select(db: Database, where: list[str], params: list[Any], key: str, descending: bool,
           limit: int) -> list[Any]:
    direction = "DESC" if descending else "ASC"
    order = f"{key} {direction}, seq {direction}" if key != "seq" else f"seq {direction}"
    return db.query(f"SELECT {COLUMNS} FROM runs WHERE {' AND '.join(where)} "
                    f"ORDER BY {order} LIMIT ?", [*params, limit])


def after_cursor(db: Database, where: list[str], params: list[Any], key: str, query: Query,
                 taxon_id: int, limit: int) -> list[Any]:
    """The rows after the cursor's run, as two index ranges.

    ``(key, seq) > (?, ?)`` would only range over ``key`` and then read every run sharing the
    cursor's value (half a million "pending" runs); instead: the rest of the cursor's value
    by ``seq``, then the values beyond it.
    """
    assert query.after is not None
    beyond = "<" if query.descending else ">"
    if key == "seq":
        return select(db, [*where, f"seq {beyond} ?"], [*params, query.after], key,
                      query.descending, limit)
    last = db.query(f"SELECT {key} FROM runs WHERE taxon = ? AND seq = ?",
                    (taxon_id, query.after))
    if not last:
        raise GoneCursor(f"run {query.after} is no longer in taxon {taxon_id}")
    value = last[0][0]
    same = select(db, [*where, f"{key} = ?", f"seq {beyond} ?"],
                  [*params, value, query.after], key, query.descending, limit)
    if len(same) >= limit:
        return same
    return same + select(db, [*where, f"{key} {beyond} ?"], [*params, value], key,
                         query.descending, limit - len(same))


def run_json(row: Any) -> dict[str, Any]:
    """One run as the table and the API show it."""
    files = [f for f in row["fastq_files"].split(";") if f]
    sizes = [int(s) for s in row["fastq_bytes"].split(";") if s]
    reason = row["exclusion_reason"] if row["is_excluded"] else ""
    return {
        "accession": row["accession"], "status": row["category"],
        "files": [{"name": name.rsplit("/", 1)[-1], "bytes": size}
                  for name, size in zip(files, sizes + [0] * (len(files) - len(sizes)),
                                        strict=False)],
        "bytes": row["total_bytes"], "attempts": row["attempts"],
        "last_error": row["last_error"], "fetched_at": row["fetched_at"],
        "excluded_because": explain_exclusion(reason) if reason else "",
        "worker": row["worker"],
        "ena_url": f"https://www.ebi.ac.uk/ena/browser/view/{row['accession']}",
    }
