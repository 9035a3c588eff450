"""Whether a folder is a log at all, and whether it still holds what its writers stored.

Two checks ``verify`` makes before it trusts a count of records:

- A folder with no day file, no ``checkpoints/``, no ``checkpoint`` note, no ``quarantine/``
  and no ``.rtrace/`` is not a log (``not_a_log``): a mistyped ``--dir`` or an emptied folder
  is a failure, never "OK: 0 records". A log that was created and holds no record yet has at
  least one of them (its published key, its ``.rtrace/``), and may verify with 0 records.
- The writers cache the head (the next seq) in ``.rtrace/lock`` after each append. When the
  day files hold fewer records than that head (``acknowledged_missing``), records were removed
  or lost after they were stored; a writer refuses to write to such a log
  (``recovery.reconcile``), and verify says so too. The head is derived: with ``.rtrace/``
  deleted this check cannot be made, and nothing else changes.

Tests: ``tests/test_integrity_edges.py``.
"""

from __future__ import annotations

from .layout import Layout
from .report import Finding, Report
from .writer_lock import WriterLock

__all__ = ["check_head", "is_a_log", "not_a_log", "read_head"]


def is_a_log(layout: Layout) -> bool:
    """Whether anything a log writes is under ``layout.root``: a day file (or something named
    like one), checkpoints, the newest note, quarantined fragments or the derived folder."""
    if layout.named_like_days():
        return True
    return any(
        path.exists() or path.is_symlink()
        for path in (layout.checkpoints, layout.newest_note, layout.quarantine, layout.derived)
    )


def not_a_log(layout: Layout) -> Finding:
    """The finding for a folder that holds nothing a log writes."""
    return Finding(
        "not_a_log",
        f"{layout.root} is not a log: it holds no day file (YYYY-MM-DD.jsonl), no checkpoints/, "
        "no published verifier key and no .rtrace/ (is --dir right? was the log emptied?)",
        layout.root_s,
    )


def read_head(layout: Layout) -> int | None:
    """The next seq the writers cached in ``.rtrace/lock``, if it is there and readable. Read
    before the day files: a writer appends first and caches the head after, so the records a
    later read finds are never fewer than a head read earlier says, while writers run."""
    head = WriterLock(layout).peek()
    return head.next_seq if head is not None else None


def check_head(layout: Layout, acknowledged: int | None, records: int, report: Report) -> None:
    """Report ``acknowledged_missing`` when the log holds fewer records than the head its
    writers cached (``read_head``) says they stored."""
    if acknowledged is None or acknowledged <= records:
        return
    report.add(
        Finding(
            "acknowledged_missing",
            f"the log holds {records} records, but its writers had stored {acknowledged} "
            f"(the head they cache in .rtrace/lock): seq {records}..{acknowledged - 1} were "
            "removed or lost after they were written; restore them from a copy (a writer "
            "refuses to write until then)",
            str(layout.head_file),
            None,
            records,
            acknowledged - 1,
        )
    )
