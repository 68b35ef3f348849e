"""The API's contract: every request and response body, declared once.

The views validate input with these models and ``web.openapi`` builds ``/openapi.json`` from
them, so the document cannot promise what the code does not check. Request models are strict
(``true`` is not 1, ``"562"`` is not an id, ``1e23`` is out of every bound) and forbid unknown
keys, so a typo in a client is an answer, not a silently ignored field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend.state.registry import MAX_TAXON_ID

#: Priorities are bounded so that no client can push a taxon out of reach of every other.
PRIORITY_LIMIT = 1_000_000
#: One request adds at most this many ids (add_taxa.py takes files for more).
MAX_IDS = 1000



def whole_number(value: Any) -> Any:
    """JSON Schema's ``integer``: a number with no fraction, so ``5.0`` is 5 (a client may write
    it so) but ``true``, ``"5"`` and ``5.5`` are not; bounds then refuse ``1e23``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TaxonId = Annotated[int, Field(ge=1, le=MAX_TAXON_ID, examples=[562]),
                    BeforeValidator(whole_number)]
Priority = Annotated[int, Field(ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT,
                                description="Higher is fetched first; default 0."),
                     BeforeValidator(whole_number)]
Time = Annotated[str, Field(description="UTC, like 2026-11-23T10:15:00Z; empty for never.")]


class RequestBody(BaseModel):
    """What a client sends: strict, and no key the contract does not name."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ResponseBody(BaseModel):
    """What the app answers: exactly these keys, so the document is the whole truth."""

    model_config = ConfigDict(extra="forbid")


class AddTaxa(RequestBody):
    """``POST /api/taxa``. Each id is checked on its own and answered in ``results``."""

    taxonomy_ids: list[TaxonId] = Field(min_length=1, max_length=MAX_IDS,
                                        examples=[[562, 1280]])
    priority: Priority = 0


class SetPriority(RequestBody):
    priority: Priority


class Error(ResponseBody):
    """Every refusal: what is wrong, and for a malformed body each problem with its place."""

    error: str
    problems: list[str] = Field(default_factory=list)


class Outcome(ResponseBody):
    """What happened to one given id."""

    given: str
    taxonomy_id: int | None
    result: Literal["added", "present", "rejected"]
    detail: str
    scientific_name: str


class AddTaxaAnswer(ResponseBody):
    results: list[Outcome]
    summary: str


class AddTaxaRefused(ResponseBody):
    """Every id was rejected: nothing changed (a 422, so a client's error path sees it)."""

    error: str
    results: list[Outcome]
    summary: str


class RunCounts(ResponseBody):
    wanted: int
    fetched: int
    pending: int
    assigned: int
    failed: int
    excluded: int


class Worker(ResponseBody):
    name: str
    backend: str
    address: str
    phase: str
    runs: int
    bytes: int
    created_at: Time


class TaxonState(ResponseBody):
    """One taxon as ``GET /api/taxa/{taxon}`` shows it (like pacifica-ingest's get_state)."""

    taxonomy_id: int
    scientific_name: str
    state: str = Field(description="last_run_status; `new` when empty")
    stage: str
    stage_name: str
    task_percent: float
    runs: RunCounts
    bytes_wanted: int
    bytes_fetched: int
    needs_attention: str
    last_error: str
    last_checked: Time
    priority: int
    updated: Time
    workers: list[Worker]


class TaxaList(ResponseBody):
    taxa: list[TaxonState]


class Totals(ResponseBody):
    """Runs per category over every taxon, and bytes home and still to fetch."""

    pending: int
    assigned: int
    fetched: int
    failed: int
    excluded: int
    withdrawn: int
    runs_to_go: int
    bytes_home: int
    bytes_to_go: int


class Throughput(ResponseBody):
    window_seconds: int
    runs: int
    bytes: int
    bytes_per_second: float


class TaxonEta(ResponseBody):
    taxonomy_id: int
    scientific_name: str
    runs_to_go: int
    bytes_to_go: int
    runs_last_hour: int
    bytes_last_hour: int
    eta_seconds: int | None = Field(description="null: nothing fetched in the last hour")


class LiveWorker(ResponseBody):
    name: str
    taxonomy_id: int
    backend: str
    phase: str
    runs: int = Field(description="runs in the worker's chunk")
    runs_done: int
    bytes: int
    created_at: Time
    age_seconds: int
    cost_so_far: float | None = Field(
        description="US dollars, from the last cost estimate's hourly price; null: no billing")
    last_error: str


class Spend(ResponseBody):
    today: float = Field(description="US dollars: the sum of today's (UTC) dispatch estimates")
    cap: float = Field(description="MICROFETCH_DO_DAILY_SPEND_CAP")
    estimates: int
    percent: float


class ServiceHealth(ResponseBody):
    """An outside service's circuit: closed (fine), open (paused) or half-open (one probe)."""

    state: Literal["closed", "open", "half-open"]
    since: Time
    failures: int
    next_try: Time
    last_error: str
    paused: bool
    summary: str


class EnaProblem(ResponseBody):
    taxonomy_id: int
    scientific_name: str
    status: str
    problem: str
    last_checked: Time


class EnaHealth(ResponseBody):
    services: dict[str, ServiceHealth] = Field(
        description="ENA's portal (`ena`) and the file host (`file_host`), as on /healthz")
    last_check: Time
    problems: list[EnaProblem]
    problem_count: int


class AttentionItem(ResponseBody):
    taxonomy_id: int | None
    reason: str
    command: str = Field(description="the command that clears it")
    action: Literal["", "clear", "retry"] = Field(
        description="the taxon page's admin action that clears it; empty: none")


class Overview(ResponseBody):
    """``GET /api/overview``: what the dashboard shows and refreshes every few seconds."""

    now: Time
    totals: Totals
    throughput: Throughput
    eta_seconds: int | None
    taxa_eta: list[TaxonEta]
    workers: list[LiveWorker]
    spend: Spend
    ena: EnaHealth
    attention: list[AttentionItem]


class RunFile(ResponseBody):
    name: str
    bytes: int


class RunRow(ResponseBody):
    accession: str
    status: str = Field(description="pending, assigned, fetched, failed, excluded or withdrawn")
    files: list[RunFile]
    bytes: int
    attempts: int
    last_error: str
    fetched_at: Time
    excluded_because: str = Field(description="why the run is left out, in words")
    worker: str
    ena_url: str


class RunsPage(ResponseBody):
    """``GET /api/taxa/{taxon}/runs``: one page; pass ``next`` as ``after`` for the next."""

    taxonomy_id: int
    sort: str = Field(description="the sort shown (see `note` when it is not the one asked)")
    order: Literal["asc", "desc"]
    q: str
    limit: int
    runs: list[RunRow]
    next: str = Field(description="the cursor of the next page; empty on the last page")
    note: str = Field(description="why the page is not sorted as asked (a search matching "
                                  "too many runs is sorted by accession); usually empty")


class FetchedLine(ResponseBody):
    label: str
    runs: list[int]
    bytes: list[int]


class FetchedSeries(ResponseBody):
    """Cumulative runs and bytes fetched; ``t`` is unix seconds, one value per ``t``."""

    t: list[int]
    series: list[FetchedLine]


class AttentionCleared(ResponseBody):
    taxonomy_id: int
    needs_attention: Literal[""]


class PrioritySet(ResponseBody):
    taxonomy_id: int
    priority: int


class Retried(ResponseBody):
    taxonomy_id: int
    pending_again: int = Field(ge=0)


class CollectRequested(ResponseBody):
    queued: bool


class Health(ResponseBody):
    status: Literal["ok", "unhealthy"]
    problems: list[str]
    scheduler_running: bool
    stopping: bool
    last_heartbeat: Time
    taxa: int | None
    services: dict[str, ServiceHealth] = Field(
        description="ENA's portal (`ena`) and the file host (`file_host`): an outage is shown "
                    "here and waited out; it does not make the daemon unhealthy.")


class WorkerDone(BaseModel):
    """The body of a worker's callback: the JSON of its DONE.json (checked in callbacks.py)."""

    model_config = ConfigDict(strict=True)

    status: Literal["done", "failed"]
    runs_ok: int = Field(ge=0)
    runs_failed: int = Field(ge=0)
    bytes: int = Field(ge=0)
    finished_at: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
                             examples=["2026-11-23T10:15:00Z"])


class CallbackAccepted(ResponseBody):
    worker: str
    accepted: Literal[True]


class LoginForm(RequestBody):
    token: str
    next: str = Field("/", description="Where to go back to: a path on this site.")


class AddTaxaForm(RequestBody):
    csrf: str
    ids: str = Field(description="Taxonomy ids separated by spaces or commas.")


class TaxonActionForm(RequestBody):
    csrf: str
    action: Literal["clear", "priority", "retry"]
    priority: str = ""
