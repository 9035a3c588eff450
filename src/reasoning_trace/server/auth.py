"""Who may call the API: bearer tokens with a read or write role, and the checks that keep
a web page from using a browser as its client.

Tokens are given as ``role:token`` pairs (``REASONING_TRACE_TOKENS`` or a file, one a line);
only their SHA-256 is kept, and they are compared in constant time. ``Access`` is the
dependency that asks for them: a bearer token (``Authorization``, FastAPI's ``HTTPBearer``),
or for reads only the ``access_token`` query parameter, kept for clients that cannot set a
header (a browser's ``EventSource``). A token in a URL ends up in histories, logs and Referer
headers: the dashboard never puts it there (it asks for a read token, keeps it in the tab's
sessionStorage, and reads the event stream with ``fetch()`` and the header). Both are declared
as OpenAPI security schemes. Without tokens every route is open,
and ``rtrace serve`` refuses to listen beyond loopback (``is_loopback``).

``SiteGuard`` runs before any route. It answers only the host names served (loopback names
and the bound address by default, more with ``allowed_hosts``; ``*`` for any), so a
DNS-rebound page cannot reach the server; and it refuses (403) a state-changing request that
a browser marks cross-site (``Sec-Fetch-Site``, or an ``Origin`` other than the ``Host``).
Starlette's ``TrustedHostMiddleware`` checks host names too, but answers a plain-text 400
without saying why, and matches ``*.name`` patterns rather than exact names: the refusal here
is an RFC 9457 problem naming the host and how to allow it.
Tests: ``tests/test_server.py``, ``tests/test_hostile_http.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException
from fastapi.responses import Response
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UsageError
from .problems import problem

__all__ = ["LOOPBACK_NAMES", "ROLES", "Access", "SiteGuard", "Tokens", "host_name", "is_loopback"]

ROLES = ("read", "write")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Tokens:
    """Bearer tokens by role, kept only as SHA-256 digests."""

    def __init__(self, pairs: Iterable[str] = ()) -> None:
        self._digests: list[tuple[str, bytes]] = []
        for pair in pairs:
            role, sep, token = pair.strip().partition(":")
            if not pair.strip():
                continue
            if not sep or role not in ROLES or not token:
                raise UsageError(
                    f"a token must be written role:token with role read or write, "
                    f"not {pair.strip()[:12]!r}..."
                )
            self._digests.append((role, hashlib.sha256(token.encode()).digest()))

    @classmethod
    def from_environment(cls, path: str | None = None) -> Tokens:
        """Tokens from ``$REASONING_TRACE_TOKENS`` (comma-separated) and/or a file."""
        pairs = [p for p in os.environ.get("REASONING_TRACE_TOKENS", "").split(",") if p]
        if path:
            with open(path) as fh:
                pairs += [line for line in fh.read().splitlines() if line.strip()]
        return cls(pairs)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def role(self, token: str) -> str | None:
        """The role of a presented token, or ``None``; every digest is compared (no early exit)."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for role, known in self._digests:
            if hmac.compare_digest(digest, known) and (found is None or role == "write"):
                found = role
        return found


_BEARER = HTTPBearer(
    auto_error=False, description="A token given to rtrace serve (role:token, read or write)"
)
_QUERY_TOKEN = APIKeyQuery(
    name="access_token",
    auto_error=False,
    description="A read token, for clients that cannot set a header (a browser's EventSource)",
)
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class Access:
    """The dependencies that admit a request to read or to write (``Depends(access.read)``)."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def read(
        self, bearer: _Bearer, query: Annotated[str | None, Depends(_QUERY_TOKEN)]
    ) -> None:
        """Admit a read: a read or write token in the header, else in ``access_token``."""
        self.check("read", bearer.credentials if bearer else query or "")

    async def write(self, bearer: _Bearer) -> None:
        """Admit a write: a write token in the ``Authorization`` header."""
        self.check("write", bearer.credentials if bearer else "")

    def check(self, role: str, token: str) -> None:
        """Raise 401 for a missing or unknown token, 403 for a read token writing."""
        if not self.tokens:
            return
        if not token:
            raise HTTPException(
                401, "a bearer token is needed", headers={"WWW-Authenticate": "Bearer"}
            )
        granted = self.tokens.role(token)
        if granted is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if role == "write" and granted != "write":
            raise HTTPException(403, "this token may only read")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header (``[::1]:8080`` -> ``::1``), lower case; None if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and rest[1:].isdigit() and rest[1:].isascii())):
            return None
        return name
    name, sep, port = host.partition(":")
    if sep and not (port.isdigit() and port.isascii()):
        return None
    return name or None


class SiteGuard:
    """ASGI middleware refusing DNS rebinding and cross-site writes before any route runs.

    ``allowed`` is the set of host names served (None: any). A state-changing method is 403
    when the browser says the request is cross-site (``Sec-Fetch-Site`` other than
    ``same-origin``/``none``) or names an ``Origin`` whose host is not the ``Host`` asked for.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        """The problem answering this request instead of the app, or None to let it pass."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed is not None:
            name = host_name(host)
            if name is None or name not in self.allowed:
                return problem(
                    400,
                    f"host {host[:80]!r} is not served here (rtrace serve --allowed-host adds "
                    "a name): a request for another name may be DNS rebinding",
                )
        if scope["method"] in _SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return problem(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = headers.get("origin")
        if origin is not None:
            try:
                netloc = urlsplit(origin).netloc.lower()
            except ValueError:
                netloc = ""
            if not netloc or netloc != host.strip().lower():
                return problem(403, f"cross-site request refused (Origin: {origin[:80]})")
        return None
