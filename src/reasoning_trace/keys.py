"""The log's signing key: where it lives, how it is created, loaded and rotated.

A log signs its checkpoints with one Ed25519 key whose name is the log's origin (C2SP
signed-note, SPEC section 4). The key file (``layout.key_path``) holds the signer key in the
note format, mode 0600, created whole on first use; its verifier key is published in the log's
``checkpoints/vkey``. A log that published a key never has it replaced silently: only
``rotate_key`` (``rtrace keys rotate``) starts a new one, keeping the old beside it.
Tests: ``tests/test_checkpoint.py``, ``tests/test_faults.py`` (broken and racing keys).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import NoteError, SigningKeyError
from .layout import fsync_dir, key_path
from .note import Signer, Verifier

__all__ = ["default_origin", "key_path", "load_signer", "rotate_key"]

logger = logging.getLogger("reasoning_trace")


def default_origin() -> str:
    """``reasoning-trace/<hostname>``: give each log on a host its own origin if it has several."""
    return f"reasoning-trace/{socket.gethostname()}"


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


def rotate_key(origin: str, path: Path | None = None) -> tuple[Signer, Path]:
    """Make a new signing key; the old one is kept beside it as ``<name>.retired-<time>``."""
    path = path or key_path(origin)
    retired = path.with_name(
        f"{path.name}.retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    if path.exists():
        os.replace(path, retired)
    return _write_key(path, Signer.generate(origin), exclusive=True), retired
