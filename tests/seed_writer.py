"""The original module's way of writing, reproduced from its listing (``shared/seed/``).

Per record: two clock reads (``time.time()`` for ``timestamp``, then ``utcnow()`` for
``datetime_utc`` and again for the day file), ``json.dumps(sort_keys=True)`` with the default
separators, and open-append-close in text mode with no process lock. Usage as a script:
``seed_writer.py ROOT COUNT REASON_BYTES TAG [PAUSE_S]`` prints ``i`` after each record it
wrote, pausing ``PAUSE_S`` seconds between records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """``datetime.utcnow()`` as the original module called it (naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def seed_record(
    root: str,
    action: str,
    approved: bool,
    votes: dict[str, Any],
    subject: dict[str, Any],
    reason: str = "",
    *,
    clock: Callable[[], float] = time.time,
    now: Callable[[], datetime] = utcnow,
) -> None:
    """Append one decision exactly as the original ``record_decision`` did."""
    entry = {
        "timestamp": clock(),
        "datetime_utc": now().isoformat() + "Z",
        "action": action,
        "approved": bool(approved),
        "votes": votes,
        "subject": subject,
        "reason": reason,
    }
    path = os.path.join(root, now().strftime("%Y-%m-%d") + ".jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = json.dumps(entry, sort_keys=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def main() -> None:
    """Write COUNT decisions with REASON_BYTES of reason each, announcing each one."""
    root, count, size, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    for i in range(count):
        if pause:
            time.sleep(pause)
        seed_record(
            root,
            "upgrade_proposal",
            i % 3 != 0,
            {"safety": {"passed": i % 3 != 0, "reason": "checked"}},
            {"agent_id": f"agent-{tag}", "i": i},
            "x" * size,
        )
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
