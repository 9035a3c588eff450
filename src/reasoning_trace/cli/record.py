"""``rtrace record``: record one decision from flags or from a JSON object (``--json``), or one
decision per line of a JSON Lines file (``--jsonl``), and print what was stored.

``--jsonl`` streams: it reads ``CHUNK`` lines at a time (never the whole input) and stores the
valid decisions among them in one group commit (``DecisionLog.record_many``), so an input of
any size runs in flat memory. Each line is checked on its own, as ``--json`` checks its object
(``request.DecisionRequest``, then the library's own validation): a refused line is reported
on stderr as ``line N: why`` and nothing of it is written, and the valid lines are stored all
the same. The exit status is 0 when every line was stored and 2 (bad input) when any was
refused. A store that cannot write stops the run (fail closed): what was stored before it has
been printed. Tests: ``tests/test_cli_record.py``, ``tests/test_cli.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import click
from click.core import ParameterSource

from ..errors import RecordError, StorageError
from ..ijson import NotIJson, read_ijson
from ..record import MAX_LINE_BYTES, Decision
from .options import verdict, verdict_flags
from .render import shown

if TYPE_CHECKING:
    from ..log import DecisionLog

__all__ = ["CHUNK", "register"]

#: Lines read, and decisions stored in one group commit, at a time by ``--jsonl``.
CHUNK = 1000

#: The options that set one field of the decision, by parameter name. With ``--json`` or
#: ``--jsonl`` the input gives the whole decision: a flag beside it is refused, not merged.
FIELD_FLAGS = {
    "action": "--action",
    "approved": "--approved",
    "rejected": "--rejected",
    "votes": "--vote",
    "subject": "--subject",
    "reason": "--reason",
    "decision_id": "--id",
}


def _pairs(values: tuple[str, ...], what: str, option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{value!r} is not {what} (write KEY=VALUE)", param_hint=option
            )
        if key in out:
            raise click.BadParameter(f"{key!r} given twice", param_hint=option)
        out[key] = rest
    return out


def _votes(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``NAME=pass|fail[:REASON]`` items; the verdict in any case (``PASS``, ``Fail``)."""
    votes: dict[str, dict[str, Any]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        verdict_word, _, reason = rest.partition(":")
        verdict_word = verdict_word.lower()
        if not sep or not name or verdict_word not in ("pass", "fail"):
            raise click.BadParameter(
                f"{value!r}: write NAME=pass|fail[:REASON]", param_hint="--vote"
            )
        if name in votes:
            raise click.BadParameter(f"{name!r} voted twice", param_hint="--vote")
        votes[name] = {"passed": verdict_word == "pass", "reason": reason}
    return votes


def _field_flags_given(ctx: click.Context) -> list[str]:
    """The decision-field flags given on the command line (not left at their defaults)."""
    return [
        flag
        for name, flag in FIELD_FLAGS.items()
        if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    ]


@dataclass
class Tally:
    """What ``--jsonl`` did so far, and the refusals of the chunk in hand (reported in line
    order once the chunk is committed)."""

    stored: int = 0
    refused: int = 0
    pending: list[tuple[int, str]] = field(default_factory=list)

    def refuse(self, number: int, why: str) -> None:
        """Count line ``number`` as refused, for ``why``."""
        self.refused += 1
        self.pending.append((number, why))

    def report(self) -> None:
        """Print the chunk's refusals on stderr, in line order, control characters escaped."""
        pending, self.pending = sorted(self.pending), []
        try:
            for number, why in pending:
                click.echo(f"line {number}: {shown(why).plain}", err=True)
        except OSError:  # stderr is gone: the exit code still says lines were refused
            return


def _lines(stream: BinaryIO, limit: int, tally: Tally) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its end) for each line of ``stream``, read one at a time.
    A line longer than ``limit`` bytes is refused (``None``) and skipped without being held."""
    number = 0
    while True:
        raw = stream.readline(limit + 2)  # the line, and "\r\n" if it fits
        if not raw:
            return
        number += 1
        too_long = not raw.endswith(b"\n") and len(raw) == limit + 2
        if too_long:
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass  # the rest of a line too long to store, skipped in pieces
        line = raw[:-1] if raw.endswith(b"\n") else raw
        line = line[:-1] if line.endswith(b"\r") else line
        if too_long or len(line) > limit:
            tally.refuse(number, f"longer than {limit} bytes")
            yield number, None
            continue
        yield number, line


def _decisions(
    lines: Iterator[tuple[int, bytes | None]], tally: Tally
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, the decision's fields) for each line but blank ones; ``None`` for a line
    refused (not UTF-8, not JSON, not a decision request: counted in ``tally``)."""
    from ..request import DecisionRequest  # pydantic: only for JSON decisions

    for number, line in lines:
        if line is None:
            yield number, None
            continue
        if not line.strip():
            continue
        try:
            obj = read_ijson(line)  # as POST /v1/decisions reads a body
        except NotIJson as exc:
            tally.refuse(number, str(exc))
            yield number, None
            continue
        except ValueError as exc:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                tally.refuse(number, f"not UTF-8 (byte {bad.start + 1})")
            else:
                tally.refuse(number, f"not JSON: {exc}")
            yield number, None
            continue
        try:
            request = DecisionRequest.read(obj)
        except RecordError as exc:
            tally.refuse(number, str(exc))
            yield number, None
            continue
        yield number, dict(request)


def _record_lines(ctx: click.Context, stream: BinaryIO) -> Tally:
    """Record each line of ``stream``, ``CHUNK`` lines per commit; print each stored line as
    it is stored. A store that cannot write stops the run (after the summary)."""
    from .context import open_log

    tally = Tally()
    out = StoredLines()
    log: DecisionLog | None = None
    decisions = _decisions(_lines(stream, MAX_LINE_BYTES, tally), tally)
    try:
        while True:
            chunk: list[tuple[int, dict[str, Any]]] = []
            taken = 0
            for number, fields in decisions:
                if fields is not None:
                    chunk.append((number, fields))
                taken += 1
                if taken == CHUNK:
                    break
            failure: StorageError | None = None
            if chunk:
                try:
                    if log is None:  # opened (and created) once there is something to store
                        log = open_log(ctx, create=True)
                    results = log.record_many([fields for _, fields in chunk])
                except StorageError as exc:
                    results, failure = [], exc
                for (number, _), result in zip(chunk, results, strict=False):
                    if isinstance(result, Decision):
                        out.write(result.line + b"\n")
                        tally.stored += 1
                    elif isinstance(result, StorageError):
                        failure = failure or result
                    else:
                        tally.refuse(number, str(result))
                out.flush()
            tally.report()
            if failure is not None:
                _summary(tally)
                raise failure
            if taken < CHUNK:
                return tally
    finally:
        if log is not None:
            log.close()


class StoredLines:
    """Where ``--jsonl`` prints each stored line: stdout, until its reader goes away (``|
    head``, a closed terminal). From then on the lines are not printed, but every decision is
    still recorded or refused and counted: a reader that stops early never stops the record."""

    def __init__(self) -> None:
        self.gone = False

    def write(self, data: bytes) -> None:
        """Print ``data`` if stdout still takes it."""
        if not self.gone:
            try:
                sys.stdout.buffer.write(data)
            except OSError:  # EPIPE, or stdout closed: stop printing, keep recording
                self.gone = True

    def flush(self) -> None:
        """Flush stdout if it still takes data."""
        if not self.gone:
            try:
                sys.stdout.buffer.flush()
            except OSError:
                self.gone = True


def _summary(tally: Tally) -> None:
    try:
        click.echo(f"rtrace: {tally.stored} stored, {tally.refused} refused", err=True)
    except OSError:  # stderr is gone too: the exit code still says whether any was refused
        return


def register(cli: click.Group) -> None:
    """Add ``record`` to the ``rtrace`` group."""
    from .context import open_log

    @cli.command(
        epilog="The flags that set a field are refused beside --json and --jsonl. Exit "
        "status: 0 when stored; 2 for bad input. With --jsonl, 2 when any line was refused: "
        "the valid lines are stored all the same."
    )
    @click.option("--action", help="What was decided (a short verb).")
    @verdict_flags("The verdict: approved.", "The verdict: rejected.")
    @click.option(
        "--vote",
        "votes",
        multiple=True,
        metavar="NAME=pass|fail[:REASON]",
        help="One voter's vote (repeatable; pass/fail in any case).",
    )
    @click.option(
        "--subject",
        "subject",
        multiple=True,
        metavar="KEY=VALUE",
        help="What the decision was about (repeatable).",
    )
    @click.option("--reason", default="", help="Free text for the dashboard.")
    @click.option("--id", "decision_id", help="A caller id: makes retries idempotent.")
    @click.option(
        "--json",
        "json_in",
        type=click.File("rb"),
        metavar="FILE|-",
        help="Read the decision as a JSON object (- for stdin) instead of flags.",
    )
    @click.option(
        "--jsonl",
        "jsonl_in",
        type=click.File("rb"),
        metavar="FILE|-",
        help="Record one decision per line, each a JSON object as --json takes "
        f"(- for stdin), {CHUNK} lines per commit; prints every stored record.",
    )
    @click.pass_context
    def record(
        ctx: click.Context,
        action: str | None,
        approved: bool,
        rejected: bool,
        votes: tuple[str, ...],
        subject: tuple[str, ...],
        reason: str,
        decision_id: str | None,
        json_in: BinaryIO | None,
        jsonl_in: BinaryIO | None,
    ) -> None:
        """Record decisions (durably) and print the stored records.

        One decision from flags, or from a JSON object with --json; with --jsonl, one per
        line (blank lines skipped). A refused line is reported on stderr as "line N: why",
        then how many lines were stored and refused.
        """
        if json_in is not None and jsonl_in is not None:
            raise click.UsageError("give --json or --jsonl, not both")
        if json_in is not None or jsonl_in is not None:
            given = _field_flags_given(ctx)
            if given:
                raise click.UsageError(
                    f"{', '.join(given)} cannot be given with "
                    f"{'--json' if json_in is not None else '--jsonl'}: the JSON gives the "
                    "whole decision (put the values in it)"
                )
        if jsonl_in is not None:
            tally = _record_lines(ctx, jsonl_in)
            _summary(tally)
            if tally.refused:
                ctx.exit(2)
            return
        if json_in is not None:
            body = json_in.read(MAX_LINE_BYTES + 1)  # never more than a record can hold
            if len(body) > MAX_LINE_BYTES:
                raise click.BadParameter(
                    f"longer than {MAX_LINE_BYTES} bytes: no record that large can be stored",
                    param_hint="--json",
                )
            try:
                obj = read_ijson(body)  # as POST /v1/decisions reads a body
            except NotIJson as exc:
                raise click.BadParameter(str(exc), param_hint="--json") from exc
            except ValueError as exc:
                raise click.BadParameter(f"not JSON: {exc}", param_hint="--json") from exc
            from ..request import DecisionRequest  # pydantic: only for a JSON decision

            try:
                fields = dict(DecisionRequest.read(obj))  # the values as given
            except RecordError as exc:
                raise click.BadParameter(str(exc), param_hint="--json") from exc
        else:
            verdict_given = verdict(approved, rejected)
            if action is None or verdict_given is None:
                raise click.UsageError(
                    "give --action and --approved or --rejected "
                    "(or the whole decision with --json -)"
                )
            fields = {
                "action": action,
                "approved": verdict_given,
                "votes": _votes(votes),
                "subject": _pairs(subject, "a subject field", "--subject"),
                "reason": reason,
                "id": decision_id,
            }
        with open_log(ctx, create=True) as log:
            d = log.record(
                fields["action"],
                fields["approved"],
                fields["votes"],
                fields["subject"],
                fields["reason"],
                id=fields.get("id"),
            )
        sys.stdout.buffer.write(d.line + b"\n")
