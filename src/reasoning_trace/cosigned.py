"""The witness cosignatures a log received, and the refusals, kept beside its checkpoints.

Files (``layout.Layout``), append-only, one JSON object a line, each line written whole and
fsynced (``whole_lines.append_whole``)::

    checkpoints/cosignatures.jsonl      {"size", "root", "witness", "line", "timestamp"}
    checkpoints/witness-refusals.jsonl  {"witness", "size", "status", "message", "datetime_utc"}

A cosignature line is the C2SP tlog-cosignature note signature line a witness returned (after
``witness_client`` verified it). ``cosigned_note`` gives a checkpoint's note with the lines
of every cosignature received for its (size, root): the note "gains the witness lines", while
``checkpoints/<day>.jsonl`` keeps the note as the log signed it. A refusal is evidence that a
witness saw a tree this log no longer extends: ``verify`` reports it as a failure.
Both files are evidence, not derived state: kept with the checkpoints, never rewritten.
The sender's cursor (``.rtrace/witnesses.json``, derived: losing it costs a 409 round trip)
is read and written here (``read_cursor``, ``write_cursor``); ``witnesses_behind`` says from
it whether a witness has yet to be sent the newest checkpoint.
Tests: ``tests/test_witness.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .checkpoint import Checkpoints
from .cosignature import with_cosignatures
from .errors import ReasoningTraceError
from .layout import Layout
from .record import format_utc
from .tree import Hash
from .whole_lines import append_whole

__all__ = ["Cosigned", "Refusal", "read_cursor", "witnesses_behind", "write_cursor"]

logger = logging.getLogger("reasoning_trace")


@dataclass(frozen=True)
class Refusal:
    """A witness that refused a checkpoint of this log: who, which size, its answer."""

    witness: str
    size: int
    status: int
    message: str
    datetime_utc: str
    file: str
    line: int


class Cosigned:
    """The cosignature and refusal files of the log at ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        layout = Layout(root)
        self.dir = layout.checkpoints
        self.path = layout.cosignatures
        self.refusals_path = layout.witness_refusals

    def add(self, size: int, root: bytes, witness: str, line: str, timestamp: int) -> None:
        """Keep a verified cosignature ``line`` of the checkpoint (size, root) by ``witness``."""
        self.dir.mkdir(exist_ok=True)
        entry = {
            "size": size,
            "root": str(Hash(root)),
            "witness": witness,
            "line": line,
            "timestamp": timestamp,
        }
        append_whole(self.path, orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n")

    def lines(self) -> Iterator[tuple[int, bytes, str, str]]:
        """Every kept cosignature as (size, root, witness, line), in the order received.
        A line that is not one (torn by a crash, edited) is skipped with a warning: each
        cosignature is checked again wherever it counts."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 -- closed by the with below
        except FileNotFoundError:
            return
        with fh:
            for n, raw in enumerate(fh, 1):
                try:
                    obj = orjson.loads(raw)
                    yield (
                        int(obj["size"]),
                        Hash.parse(obj["root"], "root"),
                        str(obj["witness"]),
                        str(obj["line"]),
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("%s:%d is not a cosignature (%s); skipped", self.path, n, exc)

    def lines_for(self, size: int, root: bytes) -> list[str]:
        """The cosignature lines kept for the checkpoint (size, root), each once."""
        out: list[str] = []
        for s, r, _, line in self.lines():
            if s == size and r == root and line not in out:
                out.append(line)
        return out

    def cosigned_note(self, note: str, size: int, root: bytes) -> str:
        """``note`` (the log's checkpoint of (size, root)) with its cosignature lines."""
        return with_cosignatures(note, self.lines_for(size, root))

    def witnessed(self) -> dict[str, int]:
        """The largest size each witness cosigned, by witness name (as kept, unchecked)."""
        out: dict[str, int] = {}
        for size, _, witness, _ in self.lines():
            out[witness] = max(size, out.get(witness, 0))
        return out

    def refuse(self, witness: str, size: int, status: int, message: str, micros: int) -> None:
        """Keep, as evidence, that ``witness`` refused the checkpoint of ``size`` records."""
        self.dir.mkdir(exist_ok=True)
        entry = {
            "witness": witness,
            "size": size,
            "status": status,
            "message": message,
            "datetime_utc": format_utc(micros),
        }
        append_whole(self.refusals_path, orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n")

    def refusals(self) -> list[Refusal]:
        """Every refusal kept, oldest first (a malformed line is itself kept as a refusal:
        whoever edits evidence should be seen)."""
        try:
            data = self.refusals_path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for n, raw in enumerate(data.splitlines(), 1):
            try:
                obj = orjson.loads(raw)
                out.append(
                    Refusal(
                        str(obj["witness"]),
                        int(obj["size"]),
                        int(obj["status"]),
                        str(obj["message"]),
                        str(obj["datetime_utc"]),
                        str(self.refusals_path),
                        n,
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                where = str(self.refusals_path)
                out.append(Refusal("?", 0, 0, f"unreadable refusal ({exc})", "", where, n))
        return out


def witnesses_behind(root: Path, witnesses: Iterable[str]) -> bool:
    """Whether one of ``witnesses`` (names) has neither cosigned nor refused the log's newest
    checkpoint, by the cursor: checkpoints a writer signed and closed before delivering."""
    try:
        latest = Checkpoints(root).latest()
        if latest is None:
            return False
    except (OSError, ReasoningTraceError) as exc:
        logger.warning("reasoning_trace: witnesses: cannot tell what they were sent: %s", exc)
        return True
    cursor = read_cursor(Layout(root).witness_cursor)  # none yet: nothing was sent
    for name in witnesses:
        mine = cursor.get(name)
        if not isinstance(mine, dict) or latest.size not in (
            mine.get("cosigned"),
            mine.get("refused"),
        ):
            return True
    return False


def read_cursor(path: Path) -> dict[str, Any]:
    """The witnesses' cursor at ``path`` (empty when missing or unreadable)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cursor(path: Path, cursor: dict[str, Any]) -> None:
    """Replace the witnesses' cursor at ``path`` (a warning when it cannot be kept)."""
    tmp = path.with_name(f".witnesses.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_bytes(orjson.dumps(cursor, option=orjson.OPT_SORT_KEYS))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("reasoning_trace: cannot keep the witnesses' cursor: %s", exc)
