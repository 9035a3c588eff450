"""The log's signing key: where it lives, how it is created, loaded and rotated.

A log signs its checkpoints with one Ed25519 key whose name is the log's origin (C2SP
signed-note, SPEC section 4; ``origin.log_origin`` decides it, one per log). The key file
(``layout.key_path``, chosen by the origin) holds the signer key in the note format, mode
0600, created whole on first use; its verifier key is published in the log's
``checkpoints/vkey``. A log that published a key never has it replaced silently: only
``rotate_log_key`` (``rtrace keys rotate``) starts a new one, keeping the old beside it, and
it refuses to rotate a host-wide key that other logs may sign with unless told so.
Tests: ``tests/test_checkpoint.py``, ``tests/test_origin.py``, ``tests/test_faults.py``
(broken and racing keys).
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoints
from .errors import NoteError, SigningKeyError, UsageError
from .layout import explicit_key_path, fsync_dir, key_path
from .note import Signer, Verifier
from .origin import check_origin, is_host_origin, log_origin, root_origin

__all__ = [
    "Rotation",
    "init_key",
    "key_path",
    "load_signer",
    "published_keys",
    "rotate_key",
    "rotate_log_key",
]

logger = logging.getLogger("reasoning_trace")


def load_signer(
    origin: str,
    path: Path | None = None,
    *,
    create: bool = True,
    published: Iterable[Verifier] = (),
) -> Signer:
    """The signing key for ``origin``, created on first use with mode 0600.

    ``published``: the verifier keys the log already published. Where one of them is named
    ``origin``, a missing key file is not replaced by a new key (that would silently change who
    signs the log); ``rtrace keys rotate`` (``rotate_key``) changes keys deliberately.
    Raises ``SigningKeyError`` naming the file and what is wrong with it.
    """
    path = path or key_path(origin)
    mine = [v for v in published if v.name == origin]
    try:
        text = path.read_text()
    except FileNotFoundError:
        if mine:
            raise SigningKeyError(
                f"no signing key at {path}, but this log already published verifier key(s) "
                f"for {origin!r} in checkpoints/vkey: restore that key file (or point "
                "$REASONING_TRACE_KEY at it); to start signing with a new key deliberately, run "
                "`rtrace keys rotate` (checkpoints signed before stay verifiable)",
                str(path),
            ) from None
        if not create:
            raise SigningKeyError(
                f"no signing key at {path} (run `rtrace keys init`)", str(path)
            ) from None
        try:
            return _write_key(path, Signer.generate(origin), exclusive=True)
        except OSError as exc:
            raise SigningKeyError(
                f"cannot create the signing key at {path}: {exc.strerror or exc} (make its "
                "folder writable, or point $REASONING_TRACE_KEY elsewhere)",
                str(path),
            ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read the signing key at {path}: {exc}", str(path)) from exc
    try:
        signer = Signer.parse(text)
    except (NoteError, ValueError) as exc:
        raise SigningKeyError(
            f"the signing key file {path} is not a usable signing key ({exc}); restore it from "
            "a backup, or start a new key deliberately with `rtrace keys rotate`",
            str(path),
        ) from exc
    if signer.name != origin:
        raise SigningKeyError(
            f"the key at {path} is named {signer.name!r}, not the log's origin {origin!r}",
            str(path),
        )
    if path.stat().st_mode & 0o077:
        logger.warning("reasoning_trace: signing key %s is readable by others (chmod 600 it)", path)
    return signer


def _write_key(path: Path, signer: Signer, *, exclusive: bool) -> Signer:
    """Create the key file with its whole content at once (a temporary file hard-linked into
    place), so a concurrent process never reads it half written; if another process created it
    first, use theirs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(str(signer) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return Signer.parse(path.read_text())
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return signer


def rotate_key(origin: str, path: Path | None = None) -> tuple[Signer, Path | None]:
    """Make a new signing key named ``origin`` at ``path`` (default ``key_path(origin)``); the
    old one, if there was one, is kept beside it as ``<name>.retired-<time>`` (returned)."""
    path = path or key_path(origin)
    retired: Path | None = None
    if path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        retired = path.with_name(f"{path.name}.retired-{stamp}")
        os.replace(path, retired)
    return _write_key(path, Signer.generate(origin), exclusive=True), retired


def published_keys(files: Checkpoints) -> list[Verifier]:
    """The verifier keys the log published; ``SigningKeyError`` naming ``checkpoints/vkey``
    when it holds a malformed one."""
    try:
        return files.verifiers()
    except NoteError as exc:
        raise SigningKeyError(
            f"{files.vkey} holds a malformed verifier key ({exc})", str(files.vkey)
        ) from exc


def init_key(
    root: Path, origin: str | None = None, *, key: Path | None = None, source: str = "origin="
) -> Signer:
    """The signing key of the log at ``root`` (created on first use, mode 0600), its verifier
    key published in ``checkpoints/vkey``.

    The origin is ``log_origin(root, origin, key=key)``'s: ``OriginConflict`` when ``origin``
    is not the one the log already signs as (``source`` says where it was given). A log that
    published a key for its origin but lost the key file gets no new one
    (``SigningKeyError``, see ``load_signer``).
    """
    name = log_origin(root, origin, key=key, source=source)
    files = Checkpoints(root)
    signer = load_signer(name, key, published=published_keys(files))
    files.publish(signer.verifier)
    return signer


@dataclass(frozen=True)
class Rotation:
    """What ``rotate_log_key`` did: the new key, its file, where the old key file was kept
    (``None``: there was none), and the origin the log signs as now and signed as before."""

    signer: Signer
    path: Path
    retired: Path | None
    origin: str
    previous: str

    @property
    def moved(self) -> bool:
        """Whether the log moved to a new origin (and so a key file of its own)."""
        return self.origin != self.previous


def rotate_log_key(
    root: Path, origin: str | None = None, *, shared_ok: bool = False, key: Path | None = None
) -> Rotation:
    """Start a new signing key for the log at ``root`` and publish its verifier key; every
    key published before stays in ``checkpoints/vkey``, so what it signed keeps verifying.

    ``origin``, when it is not the log's (``log_origin``): move the log to that origin, with a
    new key in that origin's own key file; the checkpoints signed before keep theirs, and
    ``verify`` checks each checkpoint with the published key of its own origin. Refused
    (``UsageError``) when a key file for that origin already exists: it is another log's (two
    logs must never sign as one origin), or a move was interrupted.
    A log that signs as a host-wide origin (``reasoning-trace/<host>``, every log's before
    logs had their own) shares its key file with the other logs of that host that do:
    rotating it would change their key too (and their auditors' pinned keys stop matching),
    so that is refused unless ``shared_ok``; moving the log to an origin of its own is the
    other way. ``key``: an explicit key file (else ``$REASONING_TRACE_KEY``), rotated in
    place, for every log that uses it. ``OriginConflict`` when ``$REASONING_TRACE_ORIGIN``
    names another origin than the log's.
    """
    current = log_origin(root, key=key)
    target = check_origin(origin, "--origin") if origin is not None else current
    explicit = key or explicit_key_path()
    path = explicit or key_path(target)
    where = shlex.quote(str(root))
    if target == current and is_host_origin(current) and not shared_ok:
        raise UsageError(
            f"the log at {root} signs as {current!r}, the host-wide origin every log of this "
            f"host signed as before logs had their own: its key {path} may sign other logs "
            "here too, and rotating it would change their key with this one's (their auditors' "
            "pinned verifier keys would stop matching). Give this log an origin and key of its "
            f"own: `rtrace --dir {where} keys rotate --origin {root_origin(root)}`; or rotate "
            f"the shared key for every log that uses it: `rtrace --dir {where} keys rotate "
            "--shared-ok`"
        )
    if target != current and explicit is None and path.exists():
        raise UsageError(
            f"a signing key for {target!r} already exists at {path}: that origin is another "
            "log's (two logs must never sign as one origin), or a move of this log was "
            "interrupted. Choose another origin; remove that key file only if no log signs "
            "with it"
        )
    signer, retired = rotate_key(target, path)
    Checkpoints(root).publish(signer.verifier)
    return Rotation(signer, path, retired, target, current)
