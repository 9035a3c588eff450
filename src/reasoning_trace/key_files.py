"""Signing key files: created whole, rotated with the old key kept, and put back as they were
when a rotation fails.

A key file holds one signer key in the note format, mode 0600, in a folder of mode 0700. It
is never written in place: a new key is written whole to a temporary file beside it and then
linked (a new key: never over one another process made first) or renamed (a rotation) into
place. ``rotate_key`` keeps the old key under a second name (``<name>.retired-<time>``) before
anything else, publishes the new verifier key in the log's ``checkpoints/vkey`` before the new
key takes the old one's place, and undoes each step when a later one fails.
``keys`` decides which key a log uses; this module only handles the files.
Tests: ``tests/test_checkpoint.py``, ``tests/test_key_owners.py`` (a rotation that fails).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .checkpoint import Checkpoints
from .errors import SigningKeyError, StorageError
from .layout import fsync_dir, key_path
from .note import Signer, Verifier

__all__ = ["discard_key", "rotate_key", "write_key"]

logger = logging.getLogger("reasoning_trace")


def write_key(path: Path, signer: Signer) -> Signer:
    """Create the key file with its whole content at once (a temporary file hard-linked into
    place), so a concurrent process never reads it half written; if another process created it
    first, use theirs."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _write_aside(path, signer)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return Signer.parse(path.read_text())
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return signer


def rotate_key(
    origin: str, path: Path | None = None, *, files: Checkpoints | None = None
) -> tuple[Signer, Path | None]:
    """Make a new signing key named ``origin`` at ``path`` (default ``key_path(origin)``); the
    old one, if there was one, is kept beside it as ``<name>.retired-<time>`` (returned).

    ``files``: the log's checkpoints, where the new verifier key is published before the new
    key takes the old one's place. A rotation that fails leaves the key file and
    ``checkpoints/vkey`` as they were: the new key is written aside first, the old one is
    kept by a second link (never moved away), and a published key is withdrawn again if the
    new key cannot be put in place.
    """
    path = path or key_path(origin)
    signer = Signer.generate(origin)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _write_aside(path, signer)
    retired: Path | None = None
    try:
        if os.path.lexists(path):
            retired = _retire(path)
        try:
            mark = _vkey_size(files) if files is not None else None
            if files is not None:
                _publish(files, signer.verifier)
            try:
                _put_in_place(tmp, path, replace=retired is not None)
            except BaseException:
                if files is not None:
                    _withdraw(files, mark, signer.verifier)
                raise
        except BaseException:
            if retired is not None:
                retired.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return signer, retired


def _write_aside(path: Path, signer: Signer) -> Path:
    """``signer`` written whole (mode 0600, fsynced) to a new temporary file beside ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(str(signer) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _retire(path: Path) -> Path:
    """A second name for the key file at ``path``, ``<name>.retired-<UTC time>[-n]``, so the
    old key stays whatever happens next."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        retired = path.with_name(f"{path.name}.retired-{stamp}{f'-{n}' if n else ''}")
        try:
            os.link(path, retired)
        except FileExistsError:
            continue
        return retired
    raise SigningKeyError(f"cannot keep the old key of {path}: too many retired keys", str(path))


def _put_in_place(tmp: Path, path: Path, *, replace: bool) -> None:
    """The new key file at ``path``: replacing the old one, or where there was none (a key that
    appeared meanwhile is not overwritten)."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SigningKeyError(
            f"a signing key appeared at {path} while a new one was being made: nothing was "
            "changed; look at that key file before trying again",
            str(path),
        ) from None


def _publish(files: Checkpoints, verifier: Verifier) -> None:
    try:
        files.publish(verifier)
    except OSError as exc:
        raise StorageError(
            f"cannot publish the new verifier key in {files.vkey}: {exc.strerror or exc}; "
            "the key was not rotated (the key file and checkpoints/vkey are as they were)"
        ) from exc


def _vkey_size(files: Checkpoints) -> int | None:
    try:
        return files.vkey.stat().st_size
    except FileNotFoundError:
        return None


def _withdraw(files: Checkpoints, size: int | None, verifier: Verifier) -> None:
    """Take back the verifier key just appended to ``checkpoints/vkey`` (which held ``size``
    bytes before: ``None``, no file) when the rotation it belongs to failed."""
    line = f"{verifier}\n".encode()
    try:
        data = files.vkey.read_bytes()
        if data[size or 0 :] != line:
            raise OSError(f"{files.vkey} changed meanwhile")
        if size is None:
            files.vkey.unlink()
        else:
            os.truncate(files.vkey, size)
    except OSError as exc:
        logger.error(
            "reasoning_trace: could not take the unused verifier key %s back out of %s: %s",
            verifier,
            files.vkey,
            exc,
        )


def discard_key(path: Path, signer: Signer) -> None:
    """Remove the key file ``signer`` was just created in, never published: as if never made."""
    try:
        if path.read_text().strip() == str(signer):
            path.unlink()
    except OSError as exc:
        logger.error("reasoning_trace: could not remove the unused signing key %s: %s", path, exc)
