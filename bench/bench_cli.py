"""The command line over a year of decisions: 365 day files x 3,000 (1,095,000 records).

Each row times the installed ``rtrace`` command end to end in a fresh process (interpreter
start included), warm (the best of three runs after one that builds the derived index), beside
the same question answered by a script that reads every day file with ``json.loads`` — also a
fresh process, in the same run.

    python bench/bench_cli.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_integrity import build  # noqa: E402

DAY_US = 86_400_000_000
PER_DAY = 3000

BASELINE = """
import json, os, sys, time
root, what = sys.argv[1], sys.argv[2]
since = time.time() - 30 * 86400
out = []
for name in sorted(os.listdir(root)):
    if not name.endswith(".jsonl"):
        continue
    with open(os.path.join(root, name), encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if what == "action" and r["action"] == "rollback" and r["timestamp"] >= since:
                out.append(line)
            elif what == "voter" and r["votes"].get("safety", {}).get("passed") is False:
                out.append(line)
            elif what == "stats":
                out.append((r["action"], r["approved"]))
            elif what == "tail":
                out.append(line)
                out = out[-20:]
sys.stdout.write("".join(x for x in out if isinstance(x, str)))
"""


def timed(cmd: list[str], runs: int = 3) -> float:
    """Best wall time of ``runs`` runs of a command, output discarded."""
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    """Build the year, warm the index, time each command beside its baseline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", default=None)
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="rtrace-year-")
    root = os.path.join(work, "log")
    os.environ["REASONING_TRACE_KEY"] = os.path.join(work, "signing.key")
    if not os.path.isdir(root):
        today = int(time.time()) // 86400 * 86400 * 1_000_000
        t = time.perf_counter()
        size = build(
            root, 365 * PER_DAY, realistic=True, per_day=PER_DAY, day0_us=today - 364 * DAY_US
        )
        print(
            f"built {365 * PER_DAY:,} records, {size / 1e6:,.0f} MB, "
            f"in {time.perf_counter() - t:.0f} s"
        )
    rtrace = [shutil.which("rtrace") or "rtrace", "--dir", root]
    t = time.perf_counter()
    subprocess.run([*rtrace, "stats", "--json"], stdout=subprocess.DEVNULL, check=True)
    print(f"derived index built (first query) in {time.perf_counter() - t:.0f} s")
    rows = [
        (
            "query --action rollback --since 30d",
            [*rtrace, "query", "--action", "rollback", "--since", "30d", "--format", "json"],
            "action",
            0.5,
        ),
        (
            "query --voter safety (whole year)",
            [*rtrace, "query", "--voter", "safety", "--format", "json"],
            "voter",
            1.0,
        ),
        ("stats (whole year)", [*rtrace, "stats", "--json"], "stats", 2.0),
        ("tail -n 20", [*rtrace, "tail", "-n", "20"], "tail", 0.3),
    ]
    print(
        "| command (1,095,000 records, 365 day files) | rtrace, warm | json.loads baseline "
        "| ratio | target |"
    )
    print("|---|---|---|---|---|")
    for label, cmd, what, target in rows:
        ours = timed(cmd)
        base = timed([sys.executable, "-c", BASELINE, root, what], runs=1)
        verdict = "met" if ours < target else "NOT met"
        print(
            f"| `{label}` | {ours:.3f} s | {base:.1f} s | {base / ours:,.0f}x faster | "
            f"< {target} s: {verdict} |"
        )
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
