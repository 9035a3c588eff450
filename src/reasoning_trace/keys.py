"""The log's signing key: where it lives, how it is created, loaded and rotated.

A log signs its checkpoints with one Ed25519 key whose name is the log's origin (C2SP
signed-note, SPEC section 4; ``origin.log_origin`` decides it, one per log). The key file
(``layout.key_path``, chosen by the origin) holds the signer key in the note format, mode
0600, created whole on first use (``key_files``); its verifier key is published in the log's
``checkpoints/vkey``. One key per log: a log with no origin yet does not take a key file that
belongs to another log, and the key's ``<key>.logs`` lists the logs that use it
(``key_owners``; ``log_signer``, ``init_key``). A log that published a key never has it
replaced silently: only ``rotate_log_key`` (``rtrace keys rotate``) starts a new one, keeping
the old beside it; it refuses a key that other logs may sign with (a host-wide one, or one
``<key>.logs`` lists for another log) unless told so, and a log it cannot write. A command
that is refused or fails leaves the key files and the log as they were.
Tests: ``tests/test_checkpoint.py``, ``tests/test_origin.py``, ``tests/test_key_owners.py``,
``tests/test_faults.py`` (broken and racing keys).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoints
from .errors import LogRootMissing, NoteError, SharedKeyError, SigningKeyError, UsageError
from .key_files import discard_key, rotate_key, write_key
from .key_owners import claim, key_owners, listed_owners
from .layout import explicit_key_path, key_path
from .note import Signer, Verifier
from .origin import check_origin, configured_origin, is_host_origin, log_origin, root_origin

__all__ = [
    "Rotation",
    "check_writable",
    "init_key",
    "key_path",
    "load_signer",
    "log_signer",
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
            return write_key(path, Signer.generate(origin))
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


def published_keys(files: Checkpoints) -> list[Verifier]:
    """The verifier keys the log published; ``SigningKeyError`` naming ``checkpoints/vkey``
    when it holds a malformed one."""
    try:
        return files.verifiers()
    except NoteError as exc:
        raise SigningKeyError(
            f"{files.vkey} holds a malformed verifier key ({exc})", str(files.vkey)
        ) from exc


def log_signer(
    root: Path,
    origin: str | None = None,
    *,
    key: Path | None = None,
    source: str = "origin=",
    shared_ok: bool = False,
) -> Signer:
    """The signing key of the log at ``root``, created on first use (mode 0600) and published
    in its ``checkpoints/vkey``; the log is listed in the key's ``<key>.logs``
    (``key_owners``). Its name is the log's origin: ``log_origin(root, origin, key=key)``'s
    (``origin``: the configured one, given as ``source`` says).

    A log with no origin of its own yet that would take a per-origin key file that exists is
    refused (``SharedKeyError``, see ``key_owners.claim``) when its origin was configured
    (``origin``, ``$REASONING_TRACE_ORIGIN``) or another log uses that key, unless
    ``shared_ok``. A key created here is removed again if it cannot be published.
    ``OriginConflict``: see ``log_origin``; ``SigningKeyError``: see ``load_signer``.
    """
    name = log_origin(root, origin, key=key, source=source)
    given = configured_origin(origin, source=source)
    files = Checkpoints(root)
    published = published_keys(files)
    explicit = key or explicit_key_path()
    path = explicit or key_path(name)
    with key_owners(path) as owners:
        if explicit is None and files.origin() is None:
            configured = given[1] if given is not None else None
            claim(owners, root, name, configured=configured, shared_ok=shared_ok)
        owners.add(root)
        existed = os.path.lexists(path)
        signer = load_signer(name, path, published=published)
        try:
            files.publish(signer.verifier)
        except OSError:
            if not existed:
                discard_key(path, signer)
            raise
    return signer


def check_writable(root: Path) -> None:
    """``UsageError`` ("this log cannot be written: ...") unless this process may write the
    log at ``root``: its folder, ``checkpoints/`` and ``checkpoints/vkey``. Probed without
    changing anything, before a key is touched."""
    vkey = Checkpoints(root).vkey
    try:
        if vkey.exists():
            os.close(os.open(vkey, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC))
        for folder in (root, vkey.parent):
            if folder.is_dir() and not _may_write(folder):
                read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
                why = "Read-only file system" if read_only else "Permission denied"
                raise PermissionError(errno.EACCES, why, str(folder))
    except OSError as exc:
        raise UsageError(
            f"this log cannot be written: {exc.filename or root}: {exc.strerror or exc} "
            "(nothing was changed; run this where the log can be written)"
        ) from exc


def _may_write(folder: Path) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=effective)


def init_key(
    root: Path,
    origin: str | None = None,
    *,
    key: Path | None = None,
    source: str = "origin=",
    shared_ok: bool = False,
) -> Signer:
    """The signing key of the log at ``root`` (created on first use, mode 0600), its verifier
    key published in ``checkpoints/vkey``; ``root`` is created if missing.

    The origin is ``log_origin(root, origin, key=key)``'s: ``OriginConflict`` when ``origin``
    is not the one the log already signs as (``source`` says where it was given). A log with
    no origin yet is refused a key file that belongs to another log (``SharedKeyError``, see
    ``log_signer``) unless ``shared_ok``; a log that cannot be written, ``UsageError``; a log
    that published a key for its origin but lost the key file gets no new one
    (``SigningKeyError``, see ``load_signer``). Refused, it changes nothing.
    """
    name = log_origin(root, origin, key=key, source=source)
    given = configured_origin(origin, source=source)
    if (key or explicit_key_path()) is None and Checkpoints(root).origin() is None:
        configured = given[1] if given is not None else None
        owners = listed_owners(key_path(name))  # before the root is made; again under its lock
        claim(owners, root, name, configured=configured, shared_ok=shared_ok)
    root.mkdir(parents=True, exist_ok=True)
    check_writable(root)
    return log_signer(root, origin, key=key, source=source, shared_ok=shared_ok)


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

    Only an existing log with a key of its own is rotated: ``LogRootMissing`` ("no log at")
    for a missing root, ``UsageError`` for a log that has no origin yet (``init_key`` starts
    one) and for a log this process cannot write (a read-only copy: its key file may be the
    original's). Refused, or failing half way (``rotate_key``), it changes nothing.

    ``origin``, when it is not the log's (``log_origin``): move the log to that origin, with a
    new key in that origin's own key file; the checkpoints signed before keep theirs, and
    ``verify`` checks each checkpoint with the published key of its own origin. Refused
    (``UsageError``) when a key file for that origin already exists: it is another log's (two
    logs must never sign as one origin), or a move was interrupted.
    A key that other logs may sign with is not rotated unless ``shared_ok``: rotating it would
    change their key too (their auditors' pinned keys stop matching). That is a host-wide
    origin's (``reasoning-trace/<host>``, every log's before logs had their own), and a key
    whose ``<key>.logs`` lists another log that signs with it (``SharedKeyError``); moving
    the log to an origin of its own is the other way. ``key``: an explicit key file (else
    ``$REASONING_TRACE_KEY``), rotated in place. ``OriginConflict`` when
    ``$REASONING_TRACE_ORIGIN`` names another origin than the log's.
    """
    where = shlex.quote(str(root))
    if not root.is_dir():
        raise LogRootMissing(
            f"no log at {root}: nothing to rotate (`rtrace --dir {where} keys init` starts a "
            "log's key)"
        )
    files = Checkpoints(root)
    if files.origin() is None:
        raise UsageError(
            f"the log at {root} has no signing key yet: nothing to rotate (`rtrace --dir "
            f"{where} keys init` makes one)"
        )
    current = log_origin(root, key=key)
    target = check_origin(origin, "--origin") if origin is not None else current
    explicit = key or explicit_key_path()
    path = explicit or key_path(target)
    own = root_origin(root)
    if target == current and is_host_origin(current) and not shared_ok:
        raise UsageError(
            f"the log at {root} signs as {current!r}, the host-wide origin every log of this "
            f"host signed as before logs had their own: its key {path} may sign other logs "
            "here too, and rotating it would change their key with this one's (their auditors' "
            "pinned verifier keys would stop matching). Give this log an origin and key of its "
            f"own: `rtrace --dir {where} keys rotate --origin {own}`; or rotate "
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
    check_writable(root)
    with key_owners(path) as owners:
        others = owners.others(root, current) if os.path.lexists(path) else []
        if others and not shared_ok:
            move = own if own != current else "<a new origin>"
            raise SharedKeyError(
                f"the signing key {path} of {current!r} may also sign other logs: "
                f"{', '.join(others)} (listed in {owners.path}); rotating it would change "
                "their key with this one's (their auditors' pinned verifier keys would stop "
                "matching). Give this log an origin and key of its own: `rtrace --dir "
                f"{where} keys rotate --origin {move}`; or rotate the shared key for every "
                f"log that uses it: `rtrace --dir {where} keys rotate --shared-ok`",
                origin=current,
                key=str(path),
                others=others,
            )
        signer, retired = rotate_key(target, path, files=files)
        owners.add(root)
    return Rotation(signer, path, retired, target, current)
