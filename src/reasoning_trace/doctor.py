"""``rtrace doctor``: check a log and its set-up end to end, and say what to do (SPEC 5, 6).

Each check reads only: the root and its permissions, the writer lock (probed, never held), the
signing key, the head the writers cached against what the day files hold, the newest signed
checkpoint and its age, crash repairs pending, records of the original module not yet adopted,
the index and the free disk space. Nothing under the root is written, no key is created.
Tests: ``tests/test_legacy.py`` (doctor on a healthy log and on each broken set-up).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from .checkpoint import CHECKPOINT_SECONDS, Checkpoints
from .errors import NoteError, SigningKeyError, UsageError
from .head import HEAD_BYTES, Head
from .key_owners import listed_owners
from .keys import key_path, load_signer
from .layout import Layout, resolve_root
from .legacy import find_prefix
from .origin import ORIGIN_ENV, is_host_origin, log_origin, root_origin
from .record import parse_utc
from .whole_lines import ends_with_newline

__all__ = ["Check", "diagnose"]

Status = Literal["ok", "warn", "fail"]
LOW_DISK_BYTES = 64 << 20


@dataclass(frozen=True)
class Check:
    """One check: its name, ``ok``/``warn``/``fail``, what was found, and what to do."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        """The check as a JSON object."""
        return {k: v for k, v in self.__dict__.items() if v}


def _last_seq(path: Path) -> int | None:
    """The seq of the last record of a day file that carries one (reads from the end)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 20)))
        lines = fh.read().split(b"\n")
    for line in reversed(lines[:-1] if lines and lines[-1] else lines):
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            seq = orjson.loads(line).get("seq")
            if type(seq) is int:
                return seq
    return None


def diagnose(root: str | os.PathLike[str] | None = None) -> list[Check]:
    """Every check of the log at ``root`` (resolved as SPEC 2 says), in order."""
    base = resolve_root(root)
    out: list[Check] = []
    if not base.is_dir():
        fix = "check --dir / $REASONING_TRACE_DIR; the first record creates a new log there"
        return [Check("root", "fail", f"{base} does not exist", fix)]
    writable = os.access(base, os.W_OK | os.X_OK)
    out.append(
        Check("root", "ok", f"{base}, writable")
        if writable
        else Check(
            "root",
            "fail",
            f"{base} is not writable by this user (uid {os.getuid()}): records cannot be stored",
            "make it writable (chown/chmod), or run the writer as its owner",
        )
    )
    days = Layout(base).day_files()
    unreadable = [p.name for p in days if not os.access(p, os.R_OK)]
    if unreadable:
        out.append(
            Check(
                "permissions",
                "fail",
                f"unreadable day files: {', '.join(unreadable[:5])}",
                "make the day files readable by the log's users",
            )
        )
        return out
    out.append(Check("permissions", "ok", f"{len(days)} day files readable"))
    out.append(_lock_check(base))
    files = Checkpoints(base)
    out.append(_key_check(files))
    prefix = find_prefix(str(base), [p.stem for p in days])
    tails = [s for p in reversed(days) if (s := _last_seq(p)) is not None][:1]
    size = tails[0] + 1 if tails else prefix.leaves
    try:
        latest = files.latest()
    except NoteError as exc:
        out.append(Check("checkpoint", "fail", str(exc), "run `rtrace verify` and keep its report"))
        latest = None
    cached = _cached_head(base)
    if latest is not None and latest.size > size:
        out.append(
            Check(
                "head",
                "fail",
                f"the day files hold {size} records, a signed checkpoint covers {latest.size}",
                "restore the missing records from a backup or replica; writers refuse until then",
            )
        )
    elif cached is not None and cached > size:
        out.append(
            Check(
                "head",
                "fail",
                f"the day files hold {size} records, writers had stored {cached}",
                "restore the missing records; `rtrace verify` lists them",
            )
        )
    else:
        out.append(Check("head", "ok", f"{size} records"))
    if prefix.leaves and (latest is None or latest.size < prefix.leaves):
        out.append(
            Check(
                "legacy",
                "warn",
                f"{prefix.parsed} records of the original module are not adopted yet",
                "run `rtrace adopt` to see them and `rtrace adopt --yes` to sign them "
                "(the first record adopts them too)",
            )
        )
    elif prefix.leaves:
        out.append(Check("legacy", "ok", f"{prefix.leaves} lines of the original module adopted"))
    out.append(_checkpoint_age(latest, size))
    torn = [p.name for p in days if p.stat().st_size and not ends_with_newline(p)]
    torn += [p.name for p, _, _ in files.torn()]
    if torn:
        out.append(
            Check(
                "crash repair",
                "warn",
                f"torn tails pending in {', '.join(torn[:5])}",
                "the next writer repairs them (a record, or `rtrace checkpoint --now`)",
            )
        )
    index = Layout(base).index
    out.append(
        Check(
            "index", "ok", "present" if index.exists() else "not built yet (built on first query)"
        )
    )
    free = shutil.disk_usage(base).free
    out.append(
        Check("disk", "ok", f"{free / 2**20:,.0f} MiB free")
        if free >= LOW_DISK_BYTES
        else Check(
            "disk",
            "warn",
            f"only {free / 2**20:,.1f} MiB free",
            "free space: a full disk refuses records (nothing is half written)",
        )
    )
    return out


def _lock_check(base: Path) -> Check:
    """Probe the writer lock (an ``flock`` of the root directory) without holding it."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        state = "free"
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise
        state = "held by a writer right now"
    finally:
        os.close(fd)
    head = Layout(base).head_file
    if head.exists() and not os.access(head, os.W_OK):
        return Check(
            "lock", "fail", f"{head} is not writable", "make .rtrace/ writable, or delete it"
        )
    return Check("lock", "ok", state)


def _key_check(files: Checkpoints) -> Check:
    """The origin the log signs as (``log_origin``) and its signing key, loaded (never made)."""
    try:
        origin = log_origin(files.root)
    except UsageError as exc:  # OriginConflict, or a configured origin that is no key name
        return Check("key", "fail", str(exc), f"unset ${ORIGIN_ENV} or set it to the log's")
    except (NoteError, OSError) as exc:
        return Check("key", "fail", f"cannot tell the log's origin: {exc}", "run `rtrace verify`")
    try:
        published = files.verifiers()
    except NoteError as exc:
        return Check("key", "fail", f"{files.vkey}: {exc}", "restore checkpoints/vkey")
    try:
        load_signer(origin, create=False, published=published)
    except SigningKeyError as exc:
        if not published and not Path(exc.path).exists():
            return Check("key", "ok", f"no key yet for {origin!r}: the first record creates it")
        return Check("key", "fail", str(exc), "see the message; `rtrace keys rotate` starts anew")
    path = key_path(origin)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0
    if mode & 0o077:
        return Check("key", "warn", f"{path} is readable by others", "chmod 600 it")
    if is_host_origin(origin):
        return Check(
            "key",
            "warn",
            f"{origin!r}, usable; a host-wide origin: its key {path} may sign other logs of "
            "this host too, and rotating it changes theirs",
            f"give this log its own: `rtrace keys rotate --origin {root_origin(files.root)}`",
        )
    others = listed_owners(path).others(files.root, origin)
    if others:
        return Check(
            "key",
            "warn",
            f"{origin!r}, usable; its key {path} signs other logs too ({', '.join(others)}): "
            "rotating it changes theirs",
            "give this log its own: `rtrace keys rotate --origin NEW`",
        )
    return Check("key", "ok", f"{origin!r}, usable")


def _cached_head(base: Path) -> int | None:
    try:
        head = Head.decode(Layout(base).head_file.read_bytes()[:HEAD_BYTES])
        return head.next_seq if head is not None else None
    except (OSError, ValueError, IndexError):
        return None


def _checkpoint_age(latest: object, size: int) -> Check:
    from .checkpoint import Entry

    if not isinstance(latest, Entry):
        if size:
            return Check(
                "checkpoint",
                "warn",
                f"{size} records and no signed checkpoint",
                "run `rtrace checkpoint --now`",
            )
        return Check("checkpoint", "ok", "empty log")
    try:
        age = time.time() - parse_utc(latest.datetime_utc) / 1e6
    except ValueError:
        age = 0.0
    unsigned = size - latest.size
    if unsigned > 0 and age > 2 * CHECKPOINT_SECONDS:
        return Check(
            "checkpoint",
            "warn",
            f"{unsigned} records unsigned; the newest checkpoint is {age:,.0f} s old",
            "is a writer running? `rtrace checkpoint --now` signs them",
        )
    return Check("checkpoint", "ok", f"size {latest.size}, {max(age, 0):,.0f} s old")
