"""A witness process for the kill -9 test: it stores each checkpoint it cosigns, then marks
that it did and hangs before answering, to be killed mid-request.

Usage: witness_proc.py STATE PORT MARKER.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reasoning_trace.witness import LogState, Witness
from reasoning_trace.witness_server import serve_witness


def main() -> None:
    """Serve the witness in STATE on PORT; after storing a checkpoint write its size to
    MARKER and never answer."""
    state, port, marker = sys.argv[1:4]
    witness = Witness(state, serving=True)
    store = witness._persist

    def store_then_hang(new: LogState) -> None:
        store(new)
        Path(marker).write_text(str(new.size))
        time.sleep(3600)

    witness._persist = store_then_hang  # type: ignore[method-assign]
    serve_witness(witness, "127.0.0.1", int(port)).serve_forever()


if __name__ == "__main__":
    main()
