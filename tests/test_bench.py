"""The benchmarks run from a clean checkout: each of issue 19's scripts, at a tiny size, ends
without error and prints its min / median / max table. (What they measure is never asserted:
speed is for ``BENCHMARKS.md``, not for tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SRC = BENCH.parent / "src"


def run_bench(script: str, *args: str, cwd: Path) -> str:
    """Run ``bench/<script>`` with ``args`` in a fresh interpreter; its output (exit 0)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), BENCH_DIR=str(cwd), TMPDIR=str(cwd))
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("bench_startup.py", ("--records", "300", "--days", "3", "--rounds", "3"), "median"),
        ("bench_writer.py", ("--records", "20", "--rounds", "3"), "median"),
        ("bench_verify.py", ("--records", "3000", "--per-day", "500", "--rounds", "3"), "median"),
    ],
)
def test_a_benchmark_runs_at_a_tiny_size(
    script: str, args: tuple[str, ...], expect: str, tmp_path: Path
) -> None:
    """The script runs end to end on a tiny log and prints its summary."""
    out = run_bench(script, *args, cwd=tmp_path)
    assert expect in out, out
