"""``/openapi.json``, built from the models in ``web.schemas`` and the table of operations below.

Every operation names its ``operationId``, each status its view can answer with that answer's
body, its typed path parameters and its request body (JSON or form). A test checks the table
against the app's routes and schemathesis checks the live app against the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend import __version__
from backend.state.registry import MAX_TAXON_ID
from web import schemas
from web.runs_table import MAX_PREFIX, PAGE_SIZES, SORTS

#: A response's body: a model (JSON), a media type (text), or None (no body).
Body = type[BaseModel] | str | None
REF = "#/components/schemas/{model}"
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "taxon": {"type": "integer", "minimum": 1, "maximum": MAX_TAXON_ID,
              "description": "An NCBI taxonomy id, e.g. 562"},
    "name": {"type": "string", "pattern": "^mf-[0-9]+-[0-9]+-[0-9a-f]{6}$",
             "description": "The worker's name, e.g. mf-562-0-1a2b3c"},
}
#: Query parameters, by name (see ``web.runs_table.parse_query``).
QUERY_PARAMS: dict[str, dict[str, Any]] = {
    "sort": {"schema": {"type": "string", "enum": list(SORTS), "default": "order"},
             "description": "the column to sort by; `order` is the order ENA listed them"},
    "order": {"schema": {"type": "string", "enum": ["asc", "desc"], "default": "asc"}},
    "q": {"schema": {"type": "string", "pattern": f"^[A-Za-z0-9]{{0,{MAX_PREFIX}}}$"},
          "description": "only accessions starting with this (any case)"},
    "limit": {"schema": {"type": "integer", "enum": list(PAGE_SIZES), "default": 50}},
    "after": {"schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
              "description": "the `next` of the previous page (the seq of its last run)"},
    "taxa": {"schema": {"type": "string", "enum": ["all"]},
             "description": "`all`: list every taxon, not only the 100 most urgent"},
    "before": {"schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
               "description": "history entries older than this id (the `older` link)"},
}
RUNS_QUERY = ("sort", "order", "q", "limit", "after")
CHALLENGE = {"WWW-Authenticate": {"description": "Bearer realm=\"microfetch\"",
                                  "required": True, "schema": {"type": "string"}}}
BACK = {"Location": {"description": "a page of this site", "required": True,
                     "schema": {"type": "string"}}}


@dataclass(frozen=True)
class Reply:
    description: str
    body: Body = None
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    operation_id: str
    summary: str
    replies: dict[int, Reply]
    tag: str = "api"
    json_body: type[BaseModel] | None = None
    form_body: type[BaseModel] | None = None
    security: str = ""
    query: tuple[str, ...] = ()


BAD = Reply("the request is not the contract's: each problem named", schemas.Error)
ADMIN = {401: Reply("missing or wrong admin bearer token", schemas.Error, CHALLENGE),
         403: Reply("admin actions are disabled (no MICROFETCH_ADMIN_TOKEN)", schemas.Error)}
UNKNOWN = Reply("the taxon is not in the registry", schemas.Error)
PAGE = Reply("the page", "text/html")
REFUSED_PAGE = Reply("not signed in, or the form's CSRF token is missing or stale", "text/html")
BAD_FORM = Reply("the form lacks a field or has a wrong value", "text/html")

OPERATIONS: tuple[Operation, ...] = (
    Operation("/api/workers/{name}/callback", "post", "workerCallback",
              "A worker reports that its chunk is finished (the JSON of DONE.json)",
              {200: Reply("accepted (also when repeated)", schemas.CallbackAccepted),
               400: Reply("the body is not DONE.json's JSON", schemas.Error),
               401: Reply("missing or wrong worker token, or the worker was destroyed",
                          schemas.Error, CHALLENGE),
               404: Reply("no such worker", schemas.Error),
               413: Reply("the body is larger than a DONE.json can be (16 KiB)",
                          schemas.Error)},
              tag="workers", json_body=schemas.WorkerDone, security="workerToken"),
    Operation("/api/taxa", "get", "listTaxa", "Every taxon's state",
              {200: Reply("the taxa", schemas.TaxaList)}),
    Operation("/api/taxa", "post", "addTaxa",
              "Add taxa: every id's form is checked first, then each is answered on its own",
              {200: Reply("one result per id; at least one added or present",
                          schemas.AddTaxaAnswer),
               400: BAD, **ADMIN,
               422: Reply("every id was rejected: nothing changed",
                          schemas.AddTaxaRefused)},
              json_body=schemas.AddTaxa, security="adminToken"),
    Operation("/api/taxa/{taxon}", "get", "getTaxon",
              "One taxon's state, stage, progress percent, last error, updated",
              {200: Reply("the taxon", schemas.TaxonState), 400: BAD, 404: UNKNOWN}),
    Operation("/api/taxa/{taxon}/clear-attention", "post", "clearAttention",
              "Clear needs_attention",
              {200: Reply("cleared", schemas.AttentionCleared), 400: BAD, **ADMIN,
               404: UNKNOWN}, security="adminToken"),
    Operation("/api/taxa/{taxon}/priority", "post", "setPriority", "Change the priority",
              {200: Reply("changed", schemas.PrioritySet), 400: BAD, **ADMIN, 404: UNKNOWN},
              json_body=schemas.SetPriority, security="adminToken"),
    Operation("/api/taxa/{taxon}/retry", "post", "retryFailedRuns",
              "Failed runs back to pending",
              {200: Reply("how many runs are pending again", schemas.Retried), 400: BAD,
               **ADMIN, 404: UNKNOWN}, security="adminToken"),
    Operation("/api/collect", "post", "collectNow",
              "Ask the daemon's collector to run now (it brings finished workers' runs home)",
              {202: Reply("the collector job will run at once", schemas.CollectRequested),
               **ADMIN,
               503: Reply("this app runs without a daemon: nothing can collect",
                          schemas.Error)}, security="adminToken"),
    Operation("/api/taxa/{taxon}/runs", "get", "listRuns",
              "One page of a taxon's runs, sorted and searched, paged by cursor",
              {200: Reply("the page and the next page's cursor", schemas.RunsPage), 400: BAD,
               404: Reply("the taxon is not in the registry, or the run `after` names is "
                          "no longer in it", schemas.Error)}, query=RUNS_QUERY),
    Operation("/api/taxa/{taxon}/fetched", "get", "taxonFetched",
              "Cumulative runs and bytes fetched over time for one taxon",
              {200: Reply("the series", schemas.FetchedSeries), 400: BAD, 404: UNKNOWN}),
    Operation("/api/fetched", "get", "fetched",
              "Cumulative runs and bytes fetched over time: overall and the most fetched taxa",
              {200: Reply("the series", schemas.FetchedSeries)}),
    Operation("/api/overview", "get", "overview",
              "Totals, throughput, ETAs, live workers, spend, ENA health, what needs attention",
              {200: Reply("the overview", schemas.Overview)}),
    Operation("/openapi.json", "get", "openapi", "This document",
              {200: Reply("OpenAPI 3.1", "application/json")}, tag="service"),
    Operation("/healthz", "get", "health",
              "Scheduler running, heartbeat recent, registry readable",
              {200: Reply("healthy", schemas.Health),
               503: Reply("unhealthy, with the problems", schemas.Health)}, tag="service"),
    Operation("/metrics", "get", "metrics", "Prometheus text format",
              {200: Reply("the metrics (see docs/src/web.md)", "text/plain")}, tag="service"),
    Operation("/", "get", "dashboardPage", "The overview (the dashboard)",
              {200: PAGE, 400: Reply("`taxa` is neither `all` nor left out", "text/html")},
              tag="pages", query=("taxa",)),
    Operation("/taxa/{taxon}", "get", "taxonPage", "A taxon's page",
              {200: PAGE, 400: Reply("`before` is not a history entry's id", "text/html"),
               404: Reply("not a taxonomy id, or not in the registry", "text/html")},
              tag="pages", query=("before",)),
    Operation("/taxa/{taxon}/runs", "get", "runsPage",
              "A taxon's runs as a page: sorted, searched, paged by cursor",
              {200: PAGE, 400: Reply("a sort, search or cursor the table cannot take",
                                     "text/html"),
               404: Reply("not a taxonomy id, not in the registry, or `after` names a run "
                          "no longer in it", "text/html")},
              tag="pages", query=RUNS_QUERY),
    Operation("/taxa/{taxon}/samplesheet.csv", "get", "samplesheet",
              "The taxon's samplesheet (fetched runs, nf-core style), read-only",
              {200: Reply("the samplesheet", "text/csv"),
               404: Reply("no such taxon, or no samplesheet written yet", "text/html")},
              tag="pages"),
    Operation("/taxa/{taxon}/accessions.csv", "get", "accessionList",
              "The taxon's accession-list export (every run), read-only",
              {200: Reply("the accession list", "text/csv"),
               404: Reply("no such taxon, or no export written yet", "text/html")},
              tag="pages"),
    Operation("/admin/login", "post", "signIn",
              "Sign in to the pages with the admin token; back to `next` (a local path)",
              {302: Reply("back to the page", None, BACK), 400: BAD_FORM}, tag="pages",
              form_body=schemas.LoginForm),
    Operation("/admin/logout", "post", "signOut", "Sign out of the pages",
              {302: Reply("back to the dashboard", None, BACK)}, tag="pages"),
    Operation("/taxa", "post", "addTaxaForm", "Add taxa from the dashboard's form",
              {302: Reply("back to the dashboard", None, BACK), 400: BAD_FORM,
               403: REFUSED_PAGE}, tag="pages", form_body=schemas.AddTaxaForm),
    Operation("/taxa/{taxon}/action", "post", "taxonActionForm",
              "clear / priority / retry from the taxon page's form",
              {302: Reply("back to the taxon page", None, BACK), 400: BAD_FORM,
               403: REFUSED_PAGE, 404: Reply("no such taxon", "text/html")},
              tag="pages", form_body=schemas.TaxonActionForm),
)


def _content(body: Body) -> dict[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, str):
        schema: dict[str, Any] = {"type": "object"} if body == "application/json" \
            else {"type": "string"}
        return {body: {"schema": schema}}
    return {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}}


def _response(reply: Reply) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    content = _content(reply.body)
    if content:
        answer["content"] = content
    if reply.headers:
        answer["headers"] = reply.headers
    return answer


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
        "responses": {str(code): _response(reply) for code, reply in op.replies.items()},
    }
    params = [name for name in PATH_PARAMS if "{" + name + "}" in op.path]
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": PATH_PARAMS[name]} for name in params]
    parameters += [{"name": name, "in": "query", "required": False, **QUERY_PARAMS[name]}
                   for name in op.query]
    if parameters:
        doc["parameters"] = parameters
    if op.json_body or op.form_body:
        media = "application/json" if op.json_body else "application/x-www-form-urlencoded"
        model = op.json_body or op.form_body
        assert model is not None
        doc["requestBody"] = {"required": True, "content": {
            media: {"schema": {"$ref": REF.format(model=model.__name__)}}}}
    doc["security"] = [{op.security: []}] if op.security else []
    return doc


def _models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for op in OPERATIONS:
        bodies = [op.json_body, op.form_body, *(r.body for r in op.replies.values())]
        for body in bodies:
            if isinstance(body, type) and issubclass(body, BaseModel):
                found[body.__name__] = body
    return list(found.values())


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once: it depends on nothing at run time)."""
    models = _models()
    # Request models in "validation" mode (what is accepted), answers in "serialization" mode.
    requests = {op.json_body or op.form_body for op in OPERATIONS}
    _, definitions = models_json_schema(
        [(m, "validation" if m in requests else "serialization") for m in models],
        ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "microfetch", "version": __version__,
                 "description": "Worker callbacks, taxa state and admin actions."},
        "tags": [{"name": "api"}, {"name": "workers"}, {"name": "service"},
                 {"name": "pages", "description": "HTML pages and their forms"}],
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "MICROFETCH_ADMIN_TOKEN"},
                "workerToken": {"type": "http", "scheme": "bearer",
                                "description": "the worker's own callback token"}}},
        "paths": paths,
    }
