"""The log's witnessed checkpoint (C2SP tlog-witness, tlog-cosignature), read role::

    GET /v1/checkpoint/witnessed    ?quorum=K (default 1): the newest checkpoint that K of the
                                    log's witnesses (``<root>/witnesses``) cosigned, as its
                                    note with the cosignatures (text/plain); 404 when none
                                    did or the log has no witnesses, 400 for a quorum they
                                    cannot meet

A client with its own witness policy checks the note itself (``check_quorum``, aics-tlog's
``verify_checkpoint``); this route only says which checkpoint the log's witnesses vouch for.
Reading never writes. Tests: ``tests/test_witness.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from ..errors import UsageError
from ..layout import Layout
from ..witness_policy import newest_witnessed, read_witnesses
from .problems import PROBLEMS
from .state import ServedLog

__all__ = ["router"]

router = APIRouter(responses=PROBLEMS)


@router.get("/v1/checkpoint/witnessed", response_class=PlainTextResponse, operation_id="witnessed")
def witnessed(log: ServedLog, quorum: Annotated[int, Query(ge=1, le=100)] = 1) -> str:
    """The newest checkpoint the quorum of the log's witnesses cosigned (see the module)."""
    path = Layout(log.root).witnesses
    if not path.exists():
        raise HTTPException(404, "the log has no witnesses")
    try:
        witnesses = [w.key for w in read_witnesses(path)]
        note = newest_witnessed(log.root, log.checkpoints.verifiers(), witnesses, quorum)
    except UsageError as exc:
        raise HTTPException(400, str(exc)) from exc
    if note is None:
        raise HTTPException(404, f"no checkpoint is cosigned by {quorum} of the log's witnesses")
    return note
