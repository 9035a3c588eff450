"""Worker processes (``workers.py``): a script without a ``__main__`` guard can use them, and
they end with the process that started them, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reasoning_trace import DecisionLog

from .conftest import run_py

UNGUARDED = """
import sys
from reasoning_trace import verify
print("top-level ran", flush=True)
report = verify(sys.argv[1], workers=2)
print("ok" if report.ok else "not ok", report.records, flush=True)
"""

BLOCKED = """
import os, sys, time
from reasoning_trace.workers import worker_pool
pool = worker_pool(1, spawn=False)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 600)
time.sleep(600)
"""


def test_verify_with_workers_from_a_script_without_a_main_guard(root: Path) -> None:
    """``verify(root, workers=2)`` called at a script's top level runs the script once and
    returns a report (spawned workers would import the script again and fail)."""
    with DecisionLog(str(root), sync="never") as log:
        for i in range(40):
            log.record("upgrade", True, {"safety": {"passed": True}}, {"i": i})
    script = root.parent / "unguarded.py"
    script.write_text(UNGUARDED)
    done = run_py(str(script), str(root), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top-level ran", "ok 40"]
    assert "Traceback" not in done.stderr


def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A worker busy with a task ends when the process that started it is killed with
    SIGKILL, instead of waiting for work forever."""
    parent = subprocess.Popen(
        [sys.executable, "-c", BLOCKED], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert parent.stdout is not None
    try:
        worker = int(parent.stdout.readline())
        assert Path(f"/proc/{worker}").exists() or sys.platform != "linux"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        parent.stdout.close()
    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state != "Z"
