"""Checking a node's replica in the stream (the replica verifier).

``verify_node`` reads the node's records, checkpoints and keys from the stream alone: seqs
consecutive from 0, every record parses, every signed root matches. ``compare_with_replica``
checks a local log against what it replicated, so a rewrite after replication is found even
when the rewriter re-signed the local checkpoints with the node's own key. Both check with
the keys the caller holds (those the node published only when asked to trust them), and
report what about the server and stream could let replicated history go. A message on the
node's subjects that is not one of its records, checkpoints or keys is a finding.
Tests: ``tests/test_fleet.py``, ``tests/test_fleet_hostile.py``, ``tests/test_replicate.py``,
``tests/test_verify_replica.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from .checkpoint import Checkpoint, open_checkpoint
from .errors import CorruptLine, NoteError, NotFound, SignatureError, UnknownKey, UsageError
from .fleet import Fleet
from .jetstream import (
    DEFAULT_STREAM,
    check_node,
    checkpoint_subject,
    decision_subject,
    key_subject,
)
from .layout import day_file_name, resolve_root
from .note import Verifier, as_verifiers
from .report import Finding, Report
from .stream_messages import checkpoint_of
from .stream_reader import StreamReader
from .tree import CompactRange, leaf_hash

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["checkpoints", "compare_with_replica", "key_history", "published_keys", "verify_node"]

#: A node's replicated checkpoints that verify, by size: (root, stream seq).
Signed = dict[int, tuple[bytes, int]]


def published_keys(reader: StreamReader, node: str) -> list[Verifier]:
    """The verifier keys ``node`` replicated (its newest key message)."""
    msg = reader.last_message(key_subject(node))
    if msg is None:
        return []
    return _parse_keys(msg.data or b"")


def key_history(
    reader: StreamReader, node: str, report: Report
) -> list[tuple[int, list[Verifier]]]:
    """Every key message ``node``'s key subject holds: (stream seq, keys), in order. A
    message that is not a list of verifier keys is a ``foreign_message`` finding."""
    history = []
    for msg in reader.messages(key_subject(node)):
        sseq = msg.metadata.sequence.stream
        try:
            history.append((sseq, _parse_keys(msg.data or b"")))
        except (ValueError, UnicodeDecodeError) as exc:
            where = f"{msg.subject}#{sseq}"
            report.add(
                Finding("foreign_message", f"{where}: not verifier keys ({exc})", file=where)
            )
    return history


def checkpoints(
    reader: StreamReader, node: str, verifiers: list[Verifier], report: Report
) -> Signed:
    """``node``'s replicated checkpoints that verify, by size: (root, stream seq).
    Bad signatures, unknown keys, malformed notes and forks become findings."""
    signed: Signed = {}
    for msg in reader.messages(checkpoint_subject(node)):
        where = f"{msg.subject}#{msg.metadata.sequence.stream}"
        note = (msg.data or b"").decode(errors="replace")
        try:
            checkpoint_of(msg.data or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            report.add(Finding("foreign_message", f"{where}: not a checkpoint ({exc})", file=where))
            continue
        try:
            ck: Checkpoint = open_checkpoint(note, verifiers)
        except UnknownKey as exc:
            report.add(Finding("unknown_key", f"{where}: {exc}", file=where))
            continue
        except SignatureError as exc:
            report.add(Finding("bad_signature", f"{where}: {exc}", file=where))
            continue
        except NoteError as exc:
            report.add(Finding("bad_checkpoint", f"{where}: {exc}", file=where))
            continue
        seen = signed.get(ck.size)
        if seen is not None and seen[0] != ck.root:
            report.add(
                Finding(
                    "fork",
                    f"{where}: two signed checkpoints of size {ck.size} with different roots",
                    file=where,
                )
            )
            continue
        signed[ck.size] = (ck.root, msg.metadata.sequence.stream)
    return signed


def _own_records(reader: StreamReader, node: str, report: Report) -> Iterator[Msg]:
    """The messages on ``node``'s decision subject that are leaves of its tree (its records
    and legacy prefix lines); each foreign one becomes a finding."""
    for msg in reader.messages(decision_subject(node)):
        try:
            StreamReader.leaf(msg)
        except CorruptLine as exc:
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            why = exc.args[0] if exc.args else exc
            report.add(
                Finding("foreign_message", f"{where}: not a record of {node} ({why})", file=where)
            )
            continue
        yield msg


def _quiet(subject: str, sseq: int, why: str) -> None:
    """Foreign messages are findings in a report, not warnings."""


def _parse_keys(data: bytes) -> list[Verifier]:
    if not (keys := as_verifiers(data.decode()) or []):
        raise ValueError("no key in it")
    return keys


def _keys(
    fleet: Fleet,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None,
    trust_stream_keys: bool,
    report: Report,
) -> list[Verifier]:
    """The keys to check ``node``'s checkpoints with: the caller's; or, only when asked to
    trust them, every key the node published. A key subject whose keys changed is a finding:
    a failure when the stream's keys are trusted (whoever changed them may have signed what
    follows), a note otherwise."""
    verifiers = as_verifiers(vkey)
    if verifiers is None and not trust_stream_keys:
        raise UsageError(
            f"give the verifier key of {node} you hold (--vkey): keys read from the stream "
            "are whatever was published there (or say --trust-stream-keys)"
        )
    history = key_history(fleet, node, report)
    kind = "key_changed" if verifiers is None else "key_change_seen"
    for (_, before), (sseq, after) in itertools.pairwise(history):
        if {str(v) for v in before} != {str(v) for v in after}:
            where = f"{key_subject(node)}#{sseq}"
            added = sorted({str(v) for v in after} - {str(v) for v in before})
            report.add(
                Finding(
                    kind,
                    f"{where}: the verifier keys {node} publishes changed"
                    + (f" (new: {', '.join(added)})" if added else " (keys withdrawn)"),
                    file=where,
                )
            )
    if verifiers is None:
        seen: dict[str, Verifier] = {}
        for _, keys in history:
            for v in keys:
                seen.setdefault(str(v), v)
        verifiers = list(seen.values())
        if verifiers:
            report.add(
                Finding(
                    "key_from_stream",
                    f"checked with the keys {node} replicated ({verifiers[0].name}), trusted "
                    "as asked; give --vkey to check with a key you hold",
                )
            )
    return verifiers


def _server_findings(fleet: Fleet, report: Report, allow_open_server: bool) -> None:
    """What about the server and stream could let replicated history go."""
    for risk in fleet.stream_risks():
        report.add(Finding("expiring_stream", f"stream {fleet.stream}: {risk}"))
    if fleet.open_server:
        report.add(
            Finding(
                "open_server_accepted" if allow_open_server else "open_server",
                f"the NATS server at {fleet.shown_url} takes no credentials: anyone who "
                f"reaches it can delete stream {fleet.stream} or limit it so history expires, "
                "and publish as any node (run it with per-node accounts: examples/nats-server/)",
            )
        )


def _require_replica(fleet: Fleet, node: str) -> None:
    if not fleet.has_replica(node):
        raise NotFound(
            f"no replica of {node} in {fleet.stream} at {fleet.shown_url}"
            + (f" (it holds {', '.join(fleet.nodes())})" if fleet.nodes() else "")
        )


def _check_roots(tree: CompactRange, signed: Signed, report: Report, where: str) -> None:
    entry = signed.get(tree.size)
    if entry is None:
        return
    if tree.root() == entry[0]:
        report.checkpoints += 1
        report.signed_size = max(report.signed_size, tree.size)
    else:
        report.add(
            Finding(
                "checkpoint_mismatch",
                f"the first {tree.size} records of {where} do not hash to the root signed in "
                f"stream message {entry[1]}",
                seq_to=tree.size - 1,
            )
        )


def _finish(report: Report, tree: CompactRange, signed: Signed, what: str) -> None:
    beyond = [s for s in signed if s > tree.size]
    if beyond:
        report.add(
            Finding(
                "truncated",
                f"{what} has {tree.size} records but a checkpoint signs {max(beyond)}",
                seq_from=tree.size,
                seq_to=max(beyond) - 1,
            )
        )
    if tree.size > report.signed_size:
        report.add(
            Finding(
                "unsigned",
                f"records {report.signed_size}..{tree.size - 1} of {what} are not yet covered "
                "by a replicated checkpoint",
                seq_from=report.signed_size,
                seq_to=tree.size - 1,
            )
        )


class ReplicaTrust(TypedDict, total=False):
    """How a replica is read and how far its stream is trusted: ``stream`` (its name, default
    ``DEFAULT_STREAM``); ``trust_stream_keys`` (check with the keys the node replicated when
    you give none); ``allow_open_server`` (a server without credentials is a note, not a
    failure)."""

    stream: str
    trust_stream_keys: bool
    allow_open_server: bool


@contextlib.contextmanager
def _replica(
    url: str,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None,
    trust: ReplicaTrust,
    about: str,
) -> Iterator[tuple[Fleet, Report, list[Verifier], dict[int, tuple[bytes, int]]]]:
    """The node's replica opened and its checkpoints read: (fleet, a report titled ``about``
    and the stream, the keys to check with, the checkpoints that verify)."""
    check_node(node)
    stream = trust.get("stream", DEFAULT_STREAM)
    with Fleet(url, stream=stream, on_foreign=_quiet) as fleet:
        _require_replica(fleet, node)
        report = Report(f"{about}{fleet.shown_url} {stream} {node}")
        _server_findings(fleet, report, trust.get("allow_open_server", False))
        verifiers = _keys(fleet, node, vkey, trust.get("trust_stream_keys", False), report)
        yield fleet, report, verifiers, checkpoints(fleet, node, verifiers, report)


def verify_node(
    url: str,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    **trust: Unpack[ReplicaTrust],
) -> Report:
    """Verify ``node``'s replicated records against its replicated checkpoints, from the
    stream alone: seqs consecutive from 0, every record parses, every signed root matches.

    ``vkey``: the key(s) you trust; the keys the node replicated are used only with
    ``trust_stream_keys`` (``UsageError`` otherwise). ``NotFound`` when ``node`` replicated
    nothing there. A stream setting that lets history expire is a note; a server without
    credentials is a failure unless ``allow_open_server``; a foreign message is a failure.
    """
    with _replica(url, node, vkey, trust, "") as (fleet, report, verifiers, signed):
        if not verifiers and fleet.subjects(checkpoint_subject(node)):
            report.add(Finding("no_key", f"{node} replicated checkpoints but no verifier key"))
        tree = CompactRange()
        expected = 0
        for msg in fleet.messages(decision_subject(node)):
            where = f"{msg.subject}#{msg.metadata.sequence.stream}"
            data = msg.data or b""
            try:
                seq = StreamReader.leaf(msg)[0]
            except CorruptLine as exc:
                report.add(
                    Finding(
                        "foreign_message",
                        f"{where}: not a record of {node} ({exc.args[0] if exc.args else exc}); "
                        "skipped",
                        file=where,
                    )
                )
                continue
            if seq > expected:
                report.add(
                    Finding(
                        "deleted",
                        f"{where}: records {expected}..{seq - 1} are missing",
                        file=where,
                        seq_from=expected,
                        seq_to=seq - 1,
                    )
                )
            elif seq < expected:
                report.add(
                    Finding("reordered", f"{where}: record {seq} after {expected - 1}", file=where)
                )
            expected = max(expected, seq + 1)
            tree.append(leaf_hash(data))
            report.bytes += len(data)
            _check_roots(tree, signed, report, f"{node}'s replicated records")
        report.records = tree.size
        _finish(report, tree, signed, f"{node}'s replicated log")
        return report


def compare_with_replica(
    root: str | os.PathLike[str] | None,
    url: str,
    node: str,
    vkey: str | Verifier | Iterable[str | Verifier] | None = None,
    **trust: Unpack[ReplicaTrust],
) -> Report:
    """Check the local log at ``root`` against what ``node`` replicated: every replicated
    leaf must be the same bytes as the local leaf (``DayFiles.leaf_lines``), and the local
    leaves must hash to every replicated signed root. A local rewrite after replication fails
    here even if the local checkpoints were re-signed. Keys, credentials and ``NotFound`` as
    for ``verify_node``."""
    from .files import FileStore

    check_node(node)
    base = resolve_root(str(root) if root is not None else None)
    store = FileStore(Path(base), create=False)
    try:
        with _replica(url, node, vkey, trust, f"{base} against ") as (fleet, report, _, signed):
            replicated = _own_records(fleet, node, report)
            tree = CompactRange()
            for day, lineno, line in store.files.leaf_lines():
                where = day_file_name(day)
                msg = next(replicated, None)
                if msg is not None and (msg.data or b"") != line:
                    report.add(
                        Finding(
                            "altered",
                            f"{where}:{lineno}: local record {tree.size} differs from its "
                            f"replicated copy (stream message {msg.metadata.sequence.stream})",
                            file=where,
                            line=lineno,
                            seq_from=tree.size,
                            seq_to=tree.size,
                        )
                    )
                tree.append(leaf_hash(line))
                report.bytes += len(line) + 1
                _check_roots(tree, signed, report, "the local log")
            missing = sum(1 for _ in replicated)
            report.records = tree.size
            if missing:
                report.add(
                    Finding(
                        "deleted",
                        f"the stream holds {missing} more records of {node} than the local log",
                        seq_from=tree.size,
                        seq_to=tree.size + missing - 1,
                    )
                )
            _finish(report, tree, signed, "the local log")
            return report
    finally:
        store.close()
