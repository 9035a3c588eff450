"""A writer process for the multi-process and SIGKILL tests.

Usage: writer_proc.py ROOT TAG COUNT THREADS SYNC [PAD]. Prints ``seq id tag thread i`` for each
record once ``record`` has returned (acknowledged), flushing each line.

On a fake clock (``fake_clock.FakeClock.env``), ``WRITER_CLOCK_STEP=INSTANT`` makes every thread
write the first half of its records, then the process moves its clock to INSTANT (UTC) while
all threads wait, then they write the rest.
"""

from __future__ import annotations

import os
import sys
import threading

from reasoning_trace import DecisionLog


def main() -> None:
    """Record COUNT decisions from each of THREADS threads and acknowledge each on stdout."""
    root, tag, count, threads, sync = sys.argv[1:6]
    pad = "x" * int(sys.argv[6]) if len(sys.argv) > 6 else ""
    out = threading.Lock()
    step = os.environ.get("WRITER_CLOCK_STEP")
    barrier = threading.Barrier(int(threads))
    with DecisionLog(root, sync=sync) as log:

        def work(t: int) -> None:
            for i in range(int(count)):
                if step is not None and i == int(count) // 2:
                    if barrier.wait() == 0:
                        from fake_clock import move_clock  # only on a fake clock: no pytest

                        move_clock(step)
                    barrier.wait()
                d = log.record(
                    "w", True, {"v": {"passed": True}}, {"tag": tag, "t": t, "i": i}, pad
                )
                with out:
                    sys.stdout.write(f"{d.seq} {d.id} {tag} {t} {i}\n")
                    sys.stdout.flush()

        pool = [threading.Thread(target=work, args=(t,)) for t in range(int(threads))]
        for th in pool:
            th.start()
        for th in pool:
            th.join()


if __name__ == "__main__":
    main()
