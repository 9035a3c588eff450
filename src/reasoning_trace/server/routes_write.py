"""``POST /v1/decisions``: record one decision (write role); 201 with the stored record.

The body is read by ``body.read_json_body`` (JSON only, within the limit, I-JSON), shaped by
``request.DecisionRequest`` (the model ``rtrace record --json`` reads too, and what the
OpenAPI document shows as the body) and checked by the library as it records: every refusal
is a problem naming the field path (422), 413 for a record over the size limit, 409 for a
caller id already recorded with other content. No route updates or deletes a decision.

FastAPI does not parse the body itself (a ``DecisionRequest`` parameter): it would read any
size, accept any content type, and keep the last of two repeated keys. The body is
documented with the model's schema instead (``SCHEMAS``, ``openapi_extra``), as FastAPI
suggests for a body a route reads itself.
Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from ..errors import ConflictError, RecordError, RecordTooLarge
from ..request import DecisionRequest
from .body import read_json_body
from .metrics import ServerMetrics
from .problems import PROBLEMS, Problem
from .state import ServedLog, served

__all__ = ["SCHEMAS", "router"]


def _schemas() -> dict[str, Any]:
    """The request model and the types it uses, as OpenAPI component schemas."""
    schema = DecisionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), DecisionRequest.__name__: schema}


#: Component schemas the OpenAPI document adds for the body of ``POST /v1/decisions``.
SCHEMAS = _schemas()
_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{DecisionRequest.__name__}"}}
    },
}
_LINKS = {
    "GetDecisionById": {
        "operationId": "get_decision",
        "parameters": {"key": "$response.body#/id"},
    },
    "GetDecisionBySeq": {
        "operationId": "get_decision",
        "parameters": {"key": "$response.body#/seq"},
    },
}

router = APIRouter()


@router.post(
    "/v1/decisions",
    status_code=201,
    operation_id="record_decision",
    responses={201: {"description": "The stored record", "links": _LINKS}, **PROBLEMS},
    openapi_extra={"requestBody": _BODY},
)
async def post_decision(request: Request, log: ServedLog) -> Response:
    """Record one decision durably; 201 with the stored record (a retry returns it again)."""
    # Escapes (\\u00e9) may make a body longer than the line it becomes.
    obj = await read_json_body(request, limit=2 * log.max_line_bytes)
    try:
        decision = DecisionRequest.read(obj)
        with served(request, ServerMetrics).append_latency.time():
            d = await asyncio.to_thread(
                log.record,
                decision.action,
                decision.approved,
                decision.votes,
                decision.subject,
                decision.reason,
                id=decision.id,
            )
    except RecordTooLarge as exc:
        raise Problem(413, str(exc), path=exc.path) from None
    except RecordError as exc:
        raise Problem(422, str(exc), path=exc.path) from None
    except ConflictError as exc:
        raise Problem(409, str(exc), stored=exc.stored.to_dict()) from None
    return Response(d.line, status_code=201, media_type="application/json")
