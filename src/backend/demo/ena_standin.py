"""A small HTTP server that plays ENA on 127.0.0.1, for tests, benchmarks and `microfetch demo`.

It answers the query forms microfetch sends (``search`` and ``count`` for read_run with
``tax_tree(N)`` or ``tax_eq(N)``, optionally ``AND last_updated>=YYYY-MM-DD``), the taxonomy
look-up, and the FASTQ files its metadata points to (with HTTP ``Range``); also runs by
accession (``run_accession=ERR1 OR run_accession=ERR2``). Answers are TSV without quoting, as
ENA sends them. Faults can be queued per endpoint: ``429``, ``500``, ``html``, ``truncate`` (a
body cut short), ``drop`` (a connection dropped mid-file); for ``search`` also ``utf8`` (a byte
that is not UTF-8), ``split`` (the header line in two chunks, a moment apart), ``dribble`` (a
byte at a time, a few a second) and ``ragged`` (a row with a field too few); for ``count``
``drift`` (one more than there are).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import io
import json
import re
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORTAL = "/ena/portal/api"
TAXONOMY = "/ena/taxonomy/rest"
REAL_HOST = "ftp.sra.ebi.ac.uk"
QUERY = re.compile(r"^tax_(?P<kind>tree|eq)\((?P<taxon>\d+)\)"
                   r"(?: AND last_updated>=(?P<since>\d{4}-\d\d-\d\d))?$")
BY_ACCESSION = re.compile(r"^run_accession=\w+(?: OR run_accession=\w+)*$", re.ASCII)
#: The most bytes a ``dribble`` answer sends, a little apart each.
DRIBBLE_BYTES, DRIBBLE_GAP = 200, 0.25


@dataclass
class EnaData:
    """What the stand-in knows: rows per taxon, the tree, names, and file bytes by path."""

    rows: dict[int, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))
    children: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    names: dict[int, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def descendants(self, taxon: int) -> set[int]:
        found, todo = {taxon}, [taxon]
        while todo:
            for child in self.children.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def matching(self, query: str) -> list[dict[str, str]] | None:
        if BY_ACCESSION.match(query.strip()):
            wanted = {term.split("=", 1)[1] for term in query.split(" OR ")}
            return [row for rows in self.rows.values() for row in rows
                    if row.get("run_accession") in wanted]
        match = QUERY.match(query.strip().strip('"'))
        if not match:
            return None
        taxon = int(match["taxon"])
        taxa = self.descendants(taxon) if match["kind"] == "tree" else {taxon}
        rows = [row for t in sorted(taxa) for row in self.rows.get(t, [])]
        if match["since"]:
            rows = [r for r in rows if r.get("last_updated", "") >= match["since"]]
        return rows


def fastq_bytes(name: str, reads: int = 50) -> bytes:
    text = "".join(f"@{name}.{i}\nACGTACGTACGTACGT\n+\nIIIIIIIIIIIIIIII\n" for i in range(reads))
    return gzip.compress(text.encode(), mtime=0)


def make_run(data: EnaData, taxon: int, accession: str, *, files: int = 2,
             platform: str = "ILLUMINA", strategy: str = "WGS", layout: str = "PAIRED",
             updated: str = "2026-01-01", reads: int = 50) -> dict[str, str]:
    """A synthetic read_run row whose FASTQ files the stand-in serves, with right MD5s."""
    single, pair = [f"{accession}.fastq.gz"], [f"{accession}_1.fastq.gz", f"{accession}_2.fastq.gz"]
    names = {1: single, 2: pair, 3: single + pair}
    paths, md5s, sizes = [], [], []
    for name in names[files]:
        body = fastq_bytes(name, reads)
        path = f"vol1/fastq/{accession[:6]}/{accession}/{name}"
        data.files["/" + path] = body
        paths.append(f"{REAL_HOST}/{path}")
        md5s.append(hashlib.md5(body).hexdigest())
        sizes.append(str(len(body)))
    row = {
        "run_accession": accession, "experiment_accession": f"ERX{accession[3:]}",
        "sample_accession": f"SAMEA{accession[3:]}", "study_accession": "PRJEB00001",
        "tax_id": str(taxon), "scientific_name": data.names.get(taxon, f"taxon {taxon}"),
        "instrument_platform": platform, "instrument_model": "Illumina NovaSeq 6000",
        "library_strategy": strategy, "library_source": "GENOMIC", "library_selection": "RANDOM",
        "library_layout": layout, "read_count": str(reads), "base_count": str(reads * 16),
        "fastq_ftp": ";".join(paths), "fastq_bytes": ";".join(sizes), "fastq_md5": ";".join(md5s),
        "first_public": updated, "last_updated": updated,
    }
    data.rows[taxon].append(row)
    return row


def load_tsv(data: EnaData, taxon: int, path: Path) -> int:
    """Real read_run rows (e.g. the Lactobacillus anchor) under ``taxon``; returns the count."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    data.rows[taxon].extend(rows)
    return len(rows)


class EnaStandIn:
    """The server; ``start()`` binds 127.0.0.1 on a free port and serves in a thread."""

    def __init__(self, data: EnaData | None = None, rewrite_hosts: bool = True) -> None:
        self.data = data or EnaData()
        self.rewrite_hosts = rewrite_hosts
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[dict[str, Any]] = []
        #: Rendered search answers by (query, fields) when set: a benchmark renders a large
        #: answer once instead of on every request (clear it after changing ``data``).
        self.cache: dict[tuple[str, str], bytes] | None = None
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings_env(self) -> dict[str, str]:
        """The settings that point microfetch at this stand-in."""
        return {
            "MICROFETCH_ENA_PORTAL_URL": self.base + PORTAL,
            "MICROFETCH_ENA_TAXONOMY_URL": self.base + TAXONOMY,
            "MICROFETCH_FASTQ_HOSTS": f"127.0.0.1:{self.port}",
            "MICROFETCH_FASTQ_SCHEME": "http",
        }

    def fail(self, endpoint: str, *kinds: str) -> None:
        """Queue faults for the next ``search``, ``count``, ``taxonomy`` or ``files`` requests."""
        self.faults[endpoint].extend(kinds)

    def start(self, port: int = 0) -> EnaStandIn:
        self._server = _QuietServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def next_fault(self, endpoint: str) -> str:
        queue = self.faults.get(endpoint)
        return queue.popleft() if queue else ""

    def answer(self, params: dict[str, str], rows: list[dict[str, str]]) -> bytes:
        fields = params.get("fields", "run_accession")
        key = (params.get("query", ""), fields)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        body = self.render(rows, fields.split(","))
        if self.cache is not None:
            self.cache[key] = body
        return body

    def render(self, rows: list[dict[str, str]], fields: list[str]) -> bytes:
        """TSV as ENA writes it: tab-joined, never quoted (a ``"`` is just a character)."""
        out = io.StringIO()
        out.write("\t".join(fields) + "\n")
        here = f"127.0.0.1:{self.port}"
        for row in rows:
            values = [row.get(f, "") for f in fields]
            if self.rewrite_hosts:
                values = [v.replace(REAL_HOST, here) for v in values]
            out.write("\t".join(values) + "\n")
        return out.getvalue().encode()


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients hanging up mid-answer are part of the faults played here, not errors."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _handler(stand_in: EnaStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            self._route(url.path, dict(urllib.parse.parse_qsl(url.query)))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self._route(urllib.parse.urlsplit(self.path).path, form)

        def _route(self, path: str, params: dict[str, str]) -> None:
            stand_in.requests.append({"path": path, "params": params,
                                      "range": self.headers.get("Range"),
                                      "agent": self.headers.get("User-Agent")})
            if path == f"{PORTAL}/search":
                self._search(params)
            elif path == f"{PORTAL}/count":
                self._count(params)
            elif path.startswith(f"{TAXONOMY}/tax-id/"):
                self._taxonomy(path.rsplit("/", 1)[1])
            elif path in stand_in.data.files:
                self._file(stand_in.data.files[path])
            else:
                self._send(404, b"Not Found", "text/plain")

        def _common_fault(self, endpoint: str) -> str:
            fault = stand_in.next_fault(endpoint)
            if fault == "429":
                self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": "1"})
            elif fault == "500":
                self._send(500, b"Internal Server Error", "text/plain")
            elif fault == "html":
                self._send(200, b"<!DOCTYPE html><html><body>Service maintenance</body></html>",
                           "text/html")
            return fault

        def _search(self, params: dict[str, str]) -> None:
            fault = self._common_fault("search")
            if fault in ("429", "500", "html"):
                return
            rows = stand_in.data.matching(params.get("query", ""))
            if rows is None or params.get("result") != "read_run":
                self._send(400, b"Invalid query or result", "text/plain")
                return
            if not rows:
                self._send(204, b"", "text/plain")
                return
            body = stand_in.answer(params, rows)
            if fault == "utf8":
                at = body.index(b"\n") + 5
                body = body[:at] + b"\xff" + body[at + 1:]
            elif fault == "ragged":
                first = body.index(b"\n") + 1
                row_end = body.index(b"\n", first)
                body = body[:first] + body[first:row_end].rsplit(b"\t", 1)[0] + body[row_end:]
            if fault in ("split", "dribble"):
                self._chunked(body, 20 if fault == "split" else 1)
                return
            if fault == "truncate":  # close-delimited, so the client cannot tell from headers
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) * 2 // 3])
                self.close_connection = True
                return
            self._send(200, body, "text/plain")

        def _count(self, params: dict[str, str]) -> None:
            fault = self._common_fault("count")
            if fault in ("429", "500", "html"):
                return
            rows = stand_in.data.matching(params.get("query", ""))
            if rows is None:
                self._send(400, b"Invalid query", "text/plain")
                return
            count = len(rows) + (fault == "drift")
            self._send(200, f"count\n{count}\n".encode(), "text/plain")

        def _chunked(self, body: bytes, first: int) -> None:
            """``split``: the first ``first`` bytes, a pause, the rest. ``dribble`` (first=1):
            a byte per pause, at most DRIBBLE_BYTES, until the client hangs up."""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pieces = ([body[:first], body[first:]] if first > 1
                      else [body[i:i + 1] for i in range(min(len(body), DRIBBLE_BYTES))])
            try:
                for piece in pieces:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    time.sleep(DRIBBLE_GAP if first == 1 else 0.2)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client gave up: that is what a dribble is for
                pass
            self.close_connection = True

        def _taxonomy(self, taxon: str) -> None:
            if self._common_fault("taxonomy") in ("429", "500", "html"):
                return
            name = stand_in.data.names.get(int(taxon)) if taxon.isdigit() else None
            if name is None:
                self._send(404, b"No results.", "text/plain")
                return
            body = {"taxId": taxon, "scientificName": name, "rank": "species"}
            self._send(200, json.dumps(body).encode(), "application/json")

        def _file(self, data: bytes) -> None:
            fault = stand_in.next_fault("files")
            if fault == "503":  # the file host is down for a moment
                self._send(503, b"Service Unavailable", "text/plain")
                return
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "drop":
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def _send(self, status: int, body: bytes, kind: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler
