"""Which origin a log signs as: the first line of its checkpoints, and its signing key's name.

Each log has an origin of its own, and so a key of its own (the key file is chosen by the
origin: ``layout.key_path``). ``log_origin`` is the one place that decides it, in this order:

1. **Configured**: the ``origin`` argument (``DecisionLog(origin=...)``,
   ``rtrace keys init --origin``), else ``$REASONING_TRACE_ORIGIN``. It must be a valid key
   name (no space, no ``+``, printable, at most ``MAX_ORIGIN`` characters). When the log
   already has an origin and it is another, ``OriginConflict`` names both: nothing is signed
   under a second name (``rtrace keys rotate --origin`` is the deliberate way to move a log).
2. **The log's own**, once it has one: the name of the last verifier key in
   ``checkpoints/vkey``, else the origin of its newest checkpoint (``Checkpoints.origin``).
   It travels with the log: a moved or copied directory keeps it (and so its key). A log
   that signs as ``reasoning-trace/<hostname>``, as every log of a host did before logs had
   their own, keeps that origin and that host-wide key file.
3. **An explicit key file** (the ``key`` argument, else ``$REASONING_TRACE_KEY``) that holds
   a key: its name, since the key name is the origin. Several logs pointed at one key file
   thus sign as one origin with one key, as before.
4. **The default for the root**, ``root_origin``:
   ``reasoning-trace/<hostname>/<last path component>-<8 hex of SHA-256 of the real path>``,
   SPEC 4's prefix plus a part that tells the logs of one host apart.

Deciding only reads (``checkpoints/vkey``, the newest checkpoint, the explicit key file's
name): it creates no key and no file, so readers may call it (SPEC 4a); a reader never needs
to, since it signs nothing.
Tests: ``tests/test_origin.py``, ``tests/test_checkpoint.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

from .checkpoint import Checkpoints
from .errors import NoteError, OriginConflict, UsageError
from .layout import explicit_key_path
from .note import check_key_name

__all__ = [
    "MAX_ORIGIN",
    "ORIGIN_ENV",
    "check_origin",
    "configured_origin",
    "host_origin",
    "is_host_origin",
    "log_origin",
    "root_origin",
]

#: The environment variable that configures the origin of the log a process writes.
ORIGIN_ENV = "REASONING_TRACE_ORIGIN"
#: The longest origin that may be configured (the key file is named after it).
MAX_ORIGIN = 128
PREFIX = "reasoning-trace"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _label(text: str, limit: int) -> str:
    """``text`` with characters other than ASCII letters, digits and ``._-`` made ``_``."""
    return _UNSAFE.sub("_", text)[:limit]


def host_origin() -> str:
    """``reasoning-trace/<hostname>``: the origin every log of this host signed as before logs
    had their own (SPEC 4's default). A log that signs as it keeps it."""
    return f"{PREFIX}/{socket.gethostname()}"


def is_host_origin(origin: str) -> bool:
    """Whether ``origin`` has the host-wide form ``reasoning-trace/<host>``, whose one key file
    every log of that host that signs as it shares."""
    prefix, _, host = origin.partition("/")
    return prefix == PREFIX and bool(host) and "/" not in host


def root_origin(root: Path) -> str:
    """The origin a new log at ``root`` gets by default:
    ``reasoning-trace/<hostname>/<last path component>-<8 hex>``.

    The last component keeps ASCII letters, digits and ``._-`` (others become ``_``; at most
    32 characters; ``log`` for ``/``); the hex is the start of the SHA-256 of ``root``'s real
    path (links resolved), so two logs of one host never share an origin. Used only while a
    log has no origin of its own: moving it later does not change its origin.
    """
    real = os.path.realpath(root)
    host = _label(socket.gethostname(), 64) or "localhost"
    name = _label(os.path.basename(real), 32) or "log"
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:8]
    return f"{PREFIX}/{host}/{name}-{digest}"


def check_origin(origin: str, source: str = "origin") -> str:
    """``origin`` if it can name a log (a C2SP key name of at most ``MAX_ORIGIN``
    characters); else ``UsageError`` naming ``source`` (where the value came from)."""
    try:
        check_key_name(origin)
    except NoteError as exc:
        raise UsageError(f"{source}: {exc}") from None
    if len(origin) > MAX_ORIGIN:
        raise UsageError(f"{source}: an origin is at most {MAX_ORIGIN} characters")
    return origin


def _key_name(path: Path) -> str | None:
    """The name of the signer key in the file at ``path``, or ``None`` (no file, or not a key:
    loading it says what is wrong). Only the name is read, never used to sign."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        return None
    try:
        check_key_name(parts[2])
    except NoteError:
        return None
    return parts[2]


def configured_origin(
    origin: str | None = None, *, env: bool = True, source: str = "origin="
) -> tuple[str, str] | None:
    """The configured origin and where it was given: ``origin`` (given as ``source`` says),
    else ``$REASONING_TRACE_ORIGIN`` unless ``env`` is false; ``None`` when neither names
    one. ``UsageError`` when it cannot name a log."""
    if origin is None and env:
        origin, source = os.environ.get(ORIGIN_ENV) or None, f"${ORIGIN_ENV}"
    if origin is None:
        return None
    return check_origin(origin, source), source


def log_origin(
    root: Path,
    origin: str | None = None,
    *,
    key: Path | None = None,
    env: bool = True,
    source: str = "origin=",
) -> str:
    """The origin the log at ``root`` signs as; see the module docstring for the order.

    ``origin``: the configured one, given as ``source`` says (else
    ``$REASONING_TRACE_ORIGIN`` unless ``env`` is false); ``key``: an explicit key file (else
    ``$REASONING_TRACE_KEY``). Raises ``UsageError`` for a configured origin that cannot name
    a log, ``OriginConflict`` when it differs from the log's own, and ``NoteError`` when the
    newest checkpoint entry is malformed. Reads only.
    """
    given = configured_origin(origin, env=env, source=source)
    own = Checkpoints(root).origin()
    if given is not None:
        origin, source = given
        if own is not None and own != origin:
            raise OriginConflict(str(root), origin, source, own)
        return origin
    if own is not None:
        return own
    explicit = key or explicit_key_path()
    named = _key_name(explicit) if explicit is not None else None
    return named or root_origin(root)
