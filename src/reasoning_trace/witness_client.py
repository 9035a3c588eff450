"""The log's side of C2SP tlog-witness ("add-checkpoint"): each checkpoint the log signs is
sent to each of its witnesses, and the cosignatures they return are checked and kept.

``record`` never waits for a witness. The queue is durable by construction: the log's
checkpoint files (fsynced before ``record`` returns) read against a cursor,
``.rtrace/witnesses.json`` (per witness the size it last cosigned and the size it holds). A
signed checkpoint only wakes the background threads, one per witness (a slow one never holds
up another): each sends the newest checkpoint (it covers every older one), with the proof
from the size its witness holds, in a request thread given ``timeout`` seconds in all (not
per read: an answer trickled a byte at a time is given up on). A lost cursor costs a 409
round trip; a witness down for an hour gets one request when it is back.

Answers (``_send``): 200, the cosignature lines, each checked with the witness's cosigner key
over the checkpoint (``cosignature``) and kept in ``checkpoints/cosignatures.jsonl``
(``cosigned``); 409 with a smaller size, sent again with the proof from that size; 409 with a
larger size than the log's newest checkpoint, 409 naming the size sent (an equal size with
another root) and 422: a refusal (``WitnessRefused``): the witness cosigned a tree this log no
longer extends. It is logged at ERROR, kept in ``checkpoints/witness-refusals.jsonl`` (and
``verify`` fails on it), and never retried for that size. 403/404 (the witness does not
know this log or key) are logged at ERROR and retried with back-off, like a witness that is
down (a transport error, 5xx, an answer out of protocol): waits from ``first`` seconds,
doubling to ``most`` (``retry.backoff_wait``), cut short when a new checkpoint is signed.
Tests: ``tests/test_witness.py``, ``tests/test_witness_delivery.py``,
``tests/test_witness_interop.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, Checkpoints, Entry
from .cosignature import parse_signature_lines, signature_line
from .cosigned import Cosigned, read_cursor, write_cursor
from .errors import (
    NoteError,
    ReasoningTraceError,
    SignatureError,
    UsageError,
    WitnessRefused,
    WitnessUnavailable,
)
from .layout import Layout
from .metrics import incr
from .note import split_note
from .retry import backoff_wait
from .tlog_witness import SIZE_TYPE, format_add_checkpoint, parse_size
from .tree import Hash
from .witness_policy import WitnessConfig

__all__ = ["Outcome", "WitnessClient"]

logger = logging.getLogger("reasoning_trace")

#: A function that proves the tree of ``new`` records extends the one of ``old``.
Prove = Callable[[int, int], Sequence[bytes]]


@dataclass(frozen=True)
class Outcome:
    """What one witness did with the newest checkpoint: ``cosigned`` (size), ``refused``,
    ``unavailable`` or ``pending`` (not yet tried: waiting out a back-off), with a message."""

    witness: str
    state: str
    size: int
    message: str = ""


class WitnessClient:
    """Sends the newest checkpoint of the log at ``root`` to each of ``witnesses``.

    ``prove(old, new)``: the consistency proof between two sizes of the log. ``start`` runs
    the background threads (one per witness); ``wake`` tells them a checkpoint was signed;
    ``sync`` does one round now, the witnesses at once (``rtrace witness push``), and says what
    each did; ``close`` stops the threads, giving them at most ``drain`` seconds to finish.
    ``timeout``: the deadline of one request, in all.
    """

    def __init__(
        self,
        root: Path,
        witnesses: Sequence[WitnessConfig],
        prove: Prove,
        *,
        timeout: float = 10.0,
        first: float = 1.0,
        most: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if importlib.util.find_spec("httpx") is None:  # imported by the thread, not here
            raise UsageError(
                "sending checkpoints to witnesses needs httpx: pip install "
                "'reasoning-trace[witness]'"
            )
        self.root = root
        self.witnesses = [w for w in witnesses if w.url is not None]
        self.prove = prove
        self.timeout = timeout
        self.first, self.most = first, most
        self.clock = clock
        self.checkpoints = Checkpoints(root)
        self.cosigned = Cosigned(root)
        self.cursor_path = Layout(root).witness_cursor
        names = [w.name for w in self.witnesses]
        self._wake = {name: threading.Event() for name in names}
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}  # the background ones
        self._rounds: dict[str, threading.Thread] = {}  # ``sync``'s
        self._due: dict[str, float] = {}  # witness -> monotonic time before which not to try
        self._failures: dict[str, int] = {}
        self._busy = {name: threading.Lock() for name in names}  # one round at a time
        self._cursor_lock = threading.Lock()
        self._requests: dict[str, threading.Thread] = {}  # the newest request per witness
        self._http: dict[str, Any] = {}

    # --- the background thread -------------------------------------------------------------

    def start(self) -> WitnessClient:
        """Run the background threads, one per witness (once)."""
        if not self._threads:
            for witness in self.witnesses:
                thread = threading.Thread(target=self._run, args=(witness,), daemon=True)
                self._threads[witness.name] = thread
                thread.start()
        return self

    def wake(self) -> None:
        """A checkpoint was signed (or a back-off should be cut short): send it now."""
        self._due.clear()
        for event in self._wake.values():
            event.set()

    def _run(self, witness: WitnessConfig) -> None:
        wake = self._wake[witness.name]
        while True:  # a last round after ``close`` asked to stop: the final checkpoint
            stopping = self._stop.is_set()
            wake.clear()
            try:
                self._round(witness)
            except ReasoningTraceError as exc:  # the log's own files: said, then tried again
                logger.error("reasoning_trace: witnesses: %s", exc)
            except OSError as exc:
                logger.error("reasoning_trace: witnesses: cannot read the checkpoints: %s", exc)
            if stopping:
                return self._release(witness.name)
            due = self._due.get(witness.name)
            wake.wait(None if due is None else max(0.0, due - self.clock()))

    def close(self, drain: float = 2.0) -> None:
        """Stop the background threads, after at most ``drain`` seconds in all for the rounds
        in flight (a witness that hangs never holds up the log's close for longer)."""
        self._due.clear()
        self._stop.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + drain
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        for name in list(self._http):
            self._release(name)

    def _release(self, name: str) -> None:
        """Close the HTTP client of witness ``name`` unless a thread may still use it (its
        request closes it when done, ``_request``)."""
        users = (self._threads.get(name), self._rounds.get(name), self._requests.get(name))
        if not any(
            t is not None and t.is_alive() and t is not threading.current_thread() for t in users
        ):
            http = self._http.pop(name, None)
            if http is not None:
                http.close()

    # --- one round -------------------------------------------------------------------------

    def sync(self, *, force: bool = False, deadline: float | None = None) -> list[Outcome]:
        """Send the newest checkpoint to every witness that has not cosigned it and is not
        waiting out a back-off (``force``: not waiting either), all at once; what each did.
        A witness not done within ``deadline`` seconds (``None``: no limit) is
        ``unavailable``."""
        latest = self.checkpoints.latest()
        if latest is None:
            return []
        done: dict[str, Outcome | None] = {}
        errors: list[BaseException] = []

        def one(witness: WitnessConfig) -> None:
            try:
                done[witness.name] = self._round(witness, force=force)
            except (ReasoningTraceError, OSError) as exc:
                errors.append(exc)

        self._rounds = {w.name: threading.Thread(target=one, args=(w,)) for w in self.witnesses}
        threads = list(self._rounds.values())
        for thread in threads:
            thread.daemon = True
            thread.start()
        end = None if deadline is None else time.monotonic() + deadline
        for thread in threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        if errors:
            raise errors[0]
        late = f"no answer within {deadline:g}s" if deadline is not None else ""
        outcomes = []
        for witness in self.witnesses:
            outcome = done.get(witness.name)
            if outcome is None:
                outcome = Outcome(witness.name, "unavailable", latest.size, late)
            outcomes.append(outcome)
        return outcomes

    def _round(self, witness: WitnessConfig, *, force: bool = False) -> Outcome | None:
        """Send the newest checkpoint to ``witness`` unless it cosigned it; keep its cursor."""
        with self._busy[witness.name]:
            latest = self.checkpoints.latest()
            if latest is None:
                return None
            with self._cursor_lock:
                kept = read_cursor(self.cursor_path).get(witness.name)
            mine = dict(kept) if isinstance(kept, dict) else {}
            outcome = self._one(witness, latest, mine, force=force)
            with self._cursor_lock:  # the other witnesses' entries as they are now
                cursor = read_cursor(self.cursor_path)
                cursor[witness.name] = mine
                write_cursor(self.cursor_path, cursor)
            return outcome

    def _one(
        self, witness: WitnessConfig, latest: Entry, mine: dict[str, Any], *, force: bool
    ) -> Outcome:
        name = witness.name
        root = str(Hash(latest.root))
        if mine.get("cosigned") == latest.size and mine.get("root") == root:
            return Outcome(name, "cosigned", latest.size)
        if mine.get("refused") == latest.size:
            return Outcome(name, "refused", latest.size, str(mine.get("error", "")))
        if not force and self._due.get(name, 0.0) > self.clock():
            return Outcome(name, "pending", latest.size, str(mine.get("error", "")))
        try:
            done = self._send(witness, latest, mine)
        except WitnessRefused as exc:
            mine["refused"], mine["error"] = latest.size, str(exc)
            incr("witness_refusals")
            logger.error("reasoning_trace: WITNESS REFUSED: %s", exc)
            self.cosigned.refuse(name, latest.size, exc.status, str(exc), time.time_ns() // 1000)
            return Outcome(name, "refused", latest.size, str(exc))
        except WitnessUnavailable as exc:
            failures = self._failures.get(name, 0) + 1
            self._failures[name] = failures
            wait = backoff_wait(failures, first=self.first, most=self.most)
            self._due[name] = self.clock() + wait
            mine["error"] = str(exc)
            incr("witness_failures")
            level = logging.ERROR if "refuses this log" in str(exc) else logging.WARNING
            logger.log(level, "reasoning_trace: witness %s: %s (again in %.0fs)", name, exc, wait)
            return Outcome(name, "unavailable", latest.size, str(exc))
        self._failures.pop(name, None)
        self._due.pop(name, None)
        mine.pop("error", None)
        mine["cosigned"] = mine["size"] = done.size
        mine["root"] = str(Hash(done.root))
        return Outcome(name, "cosigned", done.size)

    def _send(self, witness: WitnessConfig, latest: Entry, mine: dict[str, Any]) -> Entry:
        """Have ``witness`` cosign ``latest`` (or a newer checkpoint, if one is signed
        meanwhile); return the checkpoint cosigned. Raises ``WitnessRefused`` or
        ``WitnessUnavailable``."""
        entry = latest
        old = int(mine.get("size", 0))
        if old > entry.size:
            old = 0  # a cursor from a larger log (a restored copy): ask the witness
        for _ in range(4):
            text, _sigs = split_note(entry.note)
            checkpoint = Checkpoint.parse(text)
            proof: Sequence[bytes] = [] if old in (0, entry.size) else self.prove(old, entry.size)
            status, ctype, body = self._post(witness, format_add_checkpoint(old, proof, entry.note))
            if status == 200:
                self._keep(witness, text, checkpoint, body)
                return entry
            if status == 409:
                if ctype.split(";")[0].strip() != SIZE_TYPE:
                    raise WitnessUnavailable(f"a 409 answer of type {ctype!r}, not {SIZE_TYPE}")
                try:
                    known = parse_size(body)
                except NoteError as exc:
                    raise WitnessUnavailable(f"a 409 answer that is no size ({exc})") from exc
                mine["size"] = known
                if known == old:
                    raise WitnessRefused(
                        f"witness {witness.name} holds another root for size {known} of this "
                        "log: the log's signed history forked after the witness cosigned it",
                        witness.name,
                        409,
                        known,
                    )
                if known > entry.size:
                    newest = self.checkpoints.latest()
                    if newest is not None and newest.size >= known:
                        entry = newest  # another writer signed a newer one meanwhile
                        continue
                    raise WitnessRefused(
                        f"witness {witness.name} cosigned {known} records of this log, more than "
                        f"its newest checkpoint ({entry.size}): the log was rolled back",
                        witness.name,
                        409,
                        known,
                    )
                old = known
                continue
            reason = body.decode(errors="replace").strip()[:300]
            if status == 422:
                raise WitnessRefused(
                    f"witness {witness.name} refused the checkpoint of {entry.size} records as "
                    f"inconsistent with the tree it cosigned ({old} records): {reason}",
                    witness.name,
                    422,
                    old,
                )
            if status in (403, 404):
                raise WitnessUnavailable(
                    f"refuses this log ({status}: {reason}): configure the witness with the "
                    "log's verifier key (rtrace keys show)"
                )
            raise WitnessUnavailable(f"answered {status}: {reason}")
        raise WitnessUnavailable("the witness keeps naming other sizes (409); trying later")

    def _keep(self, witness: WitnessConfig, text: str, checkpoint: Checkpoint, body: bytes) -> None:
        """Check the 200 answer's cosignature lines by ``witness`` and keep them."""
        try:
            signatures = parse_signature_lines(body.decode())
        except (NoteError, UnicodeDecodeError) as exc:
            raise WitnessUnavailable(f"a 200 answer that is not signature lines ({exc})") from exc
        kept = 0
        for sig in signatures:
            if (sig.name, sig.id) != (witness.key.name, witness.key.id):
                continue  # tlog-witness: cosignatures by unknown keys are ignored
            try:
                timestamp = witness.key.verify(text, sig.signature)
            except SignatureError as exc:
                raise WitnessUnavailable(f"its cosignature does not verify ({exc})") from exc
            line = signature_line(sig.name, sig.id, sig.signature)
            self.cosigned.add(checkpoint.size, checkpoint.root, witness.name, line, timestamp)
            kept += 1
        if not kept:
            raise WitnessUnavailable(f"a 200 answer without a cosignature by {witness.key.name}")

    def _post(self, witness: WitnessConfig, body: bytes) -> tuple[int, str, bytes]:
        """POST an add-checkpoint body, in a thread of its own given ``timeout`` seconds in
        all; ``WitnessUnavailable`` for a transport failure or no answer by then."""
        earlier = self._requests.get(witness.name)
        if earlier is not None and earlier.is_alive():
            raise WitnessUnavailable(f"{witness.url} has not answered an earlier request yet")
        got: list[tuple[int, str, bytes] | WitnessUnavailable] = []
        request = threading.Thread(target=lambda: got.append(self._request(witness, body)))
        request.daemon = True
        self._requests[witness.name] = request
        request.start()
        request.join(self.timeout)
        if not got:
            raise WitnessUnavailable(f"no answer from {witness.url} within {self.timeout:g}s")
        if isinstance(got[0], WitnessUnavailable):
            raise got[0]
        return got[0]

    def _request(
        self, witness: WitnessConfig, body: bytes
    ) -> tuple[int, str, bytes] | WitnessUnavailable:
        import httpx

        http = self._http.get(witness.name)
        if http is None:  # one per witness: never two requests on it at once
            http = self._http[witness.name] = httpx.Client(timeout=self.timeout)
        try:
            answer = http.post(f"{witness.url}/add-checkpoint", content=body)
            return answer.status_code, answer.headers.get("content-type", ""), answer.content
        except httpx.HTTPError as exc:
            return WitnessUnavailable(f"cannot reach {witness.url}: {exc}")
        finally:
            if self._stop.is_set():  # answered after ``close`` gave up on it: closed here
                self._http.pop(witness.name, None)
                http.close()
