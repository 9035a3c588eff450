"""What the routes of one app read: the log it serves and each concept's running parts.

``create_app`` keeps them on ``app.state`` by type (``keep``); a route asks for one with
``served(request, kind)``, or for the log with the ``ServedLog`` dependency. So the routes are
declared once, at import, and several apps (one per log) can serve side by side.
Tests: ``tests/test_server.py``.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Request

from ..log import DecisionLog

__all__ = ["ServedLog", "keep", "served", "served_log"]

T = TypeVar("T")


def keep(app: FastAPI, *parts: object) -> None:
    """Keep ``parts`` on ``app``, each found by its type."""
    app.state.served = {type(part): part for part in parts}


def served(request: Request, kind: type[T]) -> T:
    """The part of type ``kind`` that the app serving ``request`` keeps."""
    part = request.app.state.served[kind]
    assert isinstance(part, kind)
    return part


async def served_log(request: Request) -> DecisionLog:
    """The log the app serves (a dependency)."""
    return served(request, DecisionLog)


ServedLog = Annotated[DecisionLog, Depends(served_log)]
