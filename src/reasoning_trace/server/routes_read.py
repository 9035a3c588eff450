"""The read routes (read role): decisions, proofs, the checkpoint and stats.

    GET /v1/decisions               query filters, newest first, ?limit= and ?cursor=
    GET /v1/decisions/{id or seq}   one record and its stored line; ?proof=true adds its
                                    inclusion proof (in the checkpoint of ?size=, if given)
    GET /v1/checkpoint              the newest signed checkpoint (text/plain)
    GET /v1/proofs/consistency      ?old=&new=
    GET /v1/stats                   the stats of ``rtrace stats``, same filters

Reading never writes or signs (SPEC 4a): a proof is null until a checkpoint covers the
decision (or while the log falls short of its newest checkpoint), and ``signed`` is shown only
for a leaf proven in a verified checkpoint.

Two fields serve a client that trusts nothing it cannot check. A page of decisions says how
many records the log held when it was read (``log_size``): the page holds every matching
record below that, so a stream resumed after ``log_size - 1`` misses none. One decision comes
with its stored ``line`` as text: what its leaf hash is computed from, and numbers exactly as
stored (a JavaScript client that parses the record rounds 12345678901234567890).
Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response

from ..attest import attest
from ..errors import NotFound, ProofError, QueryError, UsageError
from ..index_sql import MAX_SEQ
from ..query import Filter
from .problems import PROBLEMS
from .state import ServedLog

__all__ = ["TIME_PATTERN", "filters", "router"]

# A query's time as the schema says it: a span back from now, Unix seconds (up to 11 digits,
# as ``query.parse_time`` reads them), or an ISO 8601 date or date-time of years 1000 to 8999
# (days 1-28 in the pattern, which any month has; the server reads more).
TIME_PATTERN = (
    r"^([0-9]{1,5}(\.[0-9]{1,3})?[smhdw]"
    r"|[0-9]{1,11}(\.[0-9]{1,6})?"
    r"|[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?)?)$"
)


def filters(
    # The patterns document what is read; the filter's own parser checks and names errors.
    since: str | None = Query(default=None, json_schema_extra={"pattern": TIME_PATTERN}),
    until: str | None = Query(default=None, json_schema_extra={"pattern": TIME_PATTERN}),
    action: str | None = None,
    approved: bool | None = None,
    voter: str | None = None,
    subject: list[str] = Query(  # noqa: B008 -- FastAPI's way to declare it
        default=[], json_schema_extra={"items": {"type": "string", "pattern": "^[^=]+="}}
    ),
) -> Filter:
    """The query filters of ``rtrace query``, shared by the routes that take them."""
    try:
        return Filter.from_text(
            since=since,
            until=until,
            action=action,
            approved=approved,
            voter=voter,
            subject=subject,
        )
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from exc


Filters = Annotated[Filter, Depends(filters)]
router = APIRouter(responses=PROBLEMS)


_PAGE_SCHEMA = {
    "type": "object",
    "required": ["decisions", "next_cursor", "log_size", "seqs"],
    "properties": {
        "decisions": {
            "type": "array",
            "items": {"type": "object"},
            "description": "The stored records, newest first",
        },
        "next_cursor": {
            "type": ["integer", "null"],
            "description": "The cursor of the next page (null: none)",
        },
        "log_size": {
            "type": "integer",
            "description": "Records in the log when the page was read: a stream resumed "
            "after log_size - 1 misses none of the later ones",
        },
        "seqs": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Each decision's seq (the original module's lines carry none)",
        },
    },
}


@router.get(
    "/v1/decisions",
    operation_id="list_decisions",
    responses={200: {"content": {"application/json": {"schema": _PAGE_SCHEMA}}}},
)
def list_decisions(
    log: ServedLog,
    flt: Filters,
    limit: int = Query(default=50, ge=1, le=1000),
    cursor: int | None = Query(default=None, ge=0, le=MAX_SEQ),
) -> Response:
    """Decisions matching the filters, newest first, a page at a time (``next_cursor``);
    ``log_size``: the records in the log when the page was read (a stream resumed after
    ``log_size - 1`` misses none of the later ones); ``seqs``: each decision's seq."""
    size = len(log)  # taken first: the page holds every match below it, however the log grows
    page = log.query(
        flt, limit=limit + 1, newest_first=True, before_seq=size if cursor is None else cursor
    )
    more = len(page) > limit
    page = page[:limit]
    # The stored lines are JSON already: splice them in rather than re-encode each record.
    # ``seqs`` gives each one's seq, which the original module's lines do not carry.
    body = b'{"decisions":[' + b",".join(d.line for d in page) + b'],"next_cursor":'
    body += str(page[-1].seq).encode() if more else b"null"
    body += b',"log_size":%d,"seqs":[%s]}' % (size, ",".join(str(d.seq) for d in page).encode())
    return Response(body, media_type="application/json")


@router.get("/v1/decisions/{key}", operation_id="get_decision")
def get_decision(
    log: ServedLog,
    key: str,
    proof: bool = False,
    size: int | None = Query(
        default=None,
        ge=1,
        le=MAX_SEQ,
        description="Prove in the tree of this many records (a checkpoint's size); default: "
        "the newest checkpoint",
    ),
) -> dict[str, Any]:
    """One decision by id or seq, its stored line, whether it is signed, and with ``proof``
    its inclusion proof."""
    try:
        d = log.get(key)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    try:
        line: str | None = d.line.decode()
    except UnicodeDecodeError:  # an original module's line of other bytes: shown, not hashed
        line = None
    out: dict[str, Any] = {"decision": d.to_dict(), "line": line}
    # "signed" only for a leaf proven in a checkpoint whose signature verified (SPEC 4a).
    out["signed"] = attest(log, d).to_json()
    if proof:  # reading never signs: null until a checkpoint covers the decision, and while
        try:  # the log falls short of its newest checkpoint ("signed" then says so)
            out["proof"] = log.prove(d.seq, size).to_json()
        except (NotFound, ProofError, UsageError):  # none yet, records under the checkpoint
            out["proof"] = None  # removed, or not in a tree of that size
    return out


@router.get("/v1/checkpoint", response_class=PlainTextResponse, operation_id="checkpoint")
def checkpoint(log: ServedLog) -> str:
    """The newest signed checkpoint, a C2SP signed note (404 before the first)."""
    note = log.checkpoints.newest_note()
    if note is None:
        raise HTTPException(404, "no checkpoint signed yet")
    return note


@router.get("/v1/proofs/consistency", operation_id="consistency_proof")
def consistency(
    log: ServedLog,
    old: int = Query(ge=1, le=MAX_SEQ),
    new: int | None = Query(default=None, ge=1, le=MAX_SEQ),
) -> dict[str, Any]:
    """The consistency proof from tree size ``old`` to ``new`` (default: the newest)."""
    try:
        return log.consistency(old, new).to_json()
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/v1/stats", operation_id="stats")
def stats(log: ServedLog, flt: Filters) -> dict[str, Any]:
    """The stats of ``rtrace stats`` over the same filters."""
    return log.stats(flt).to_json()
