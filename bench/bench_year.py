"""A year of decisions (365 day files x 3,000 = 1,095,000 records): the first query, which
builds the derived index, and ``stats`` on a warm index, each beside DuckDB on the same files.

- first query, cold: a fresh process opens the log as a reader with no index (the reader's
  index in the per-user cache is removed before each round) and asks for the newest 20
  ``rollback`` decisions of the last 30 days; it prints how long the query took inside it.
  Baseline: a fresh process that loads the same day files into a DuckDB table
  (``read_json_auto``) and asks the same. Both are timed end to end (interpreter start and
  imports included) and from the inside.
- ``stats``, warm: ``DecisionLog.stats()`` over the whole year in one process, index built,
  beside the same counts (per action with approvals, per day, votes against per voter) as
  ``GROUP BY`` queries on a DuckDB table already loaded with the year. Also ``rtrace stats
  --json`` end to end in a fresh process.
- the first query on a subject after the build (the first build leaves subjects to it).

min / median / max over ``--rounds`` rounds (at least 3). The year is written once, directly in
the stored format (``bench_integrity.build``, the library's ``prepare`` for each template), into
``--dir`` and reused by later runs.

From a clean checkout::

    pip install -e '.[bench]'      # the library, and duckdb for the baseline
    python bench/bench_year.py --dir /tmp/rtrace-year [--rounds 3] [--before OLD/src]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

from bench_integrity import build  # noqa: E402
from reasoning_trace import DecisionLog, Filter  # noqa: E402
from reasoning_trace.layout import reader_cache  # noqa: E402

DAY_US = 86_400_000_000
PER_DAY = 3000
DAYS = 365

OURS_FIRST = """
import sys, time
t = time.perf_counter()
from reasoning_trace import DecisionLog, Filter
with DecisionLog(sys.argv[1], create=False) as log:
    found = log.query(Filter.build(action="rollback", since="30d"), limit=20, newest_first=True)
print(time.perf_counter() - t, len(found))
"""

DUCK_FIRST = """
import sys, time
t = time.perf_counter()
import duckdb
db = duckdb.connect()
db.execute("SET enable_progress_bar = false")
db.execute(f"CREATE TABLE t AS SELECT * FROM read_json_auto('{sys.argv[1]}/*.jsonl')")
since = time.time() - 30 * 86400
found = db.execute(
    "SELECT * FROM t WHERE action = 'rollback' AND timestamp >= ? ORDER BY seq DESC LIMIT 20",
    [since],
).fetchall()
print(time.perf_counter() - t, len(found))
"""


def spread(values: list[float]) -> str:
    """min / median / max, in seconds."""
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} s"


def fresh(code: str, root: str, src: str = SRC) -> tuple[float, float]:
    """(wall time end to end, time the process measured inside) of ``code`` in a new
    interpreter importing the library from ``src``."""
    env = {**os.environ, "PYTHONPATH": src}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, root], capture_output=True, text=True, check=True, env=env
    )
    wall = time.perf_counter() - t
    return wall, float(out.stdout.splitlines()[-1].split()[0])


def drop_index(root: Path) -> None:
    """Remove the reader's derived index of ``root`` (the next reader builds it)."""
    shutil.rmtree(reader_cache(root), ignore_errors=True)


def duck_stats(db: object) -> dict[str, object]:
    """The stats' counts from the DuckDB table ``t``."""
    voters = sorted(db.execute("SELECT votes FROM t LIMIT 1").fetchone()[0])  # type: ignore[attr-defined]
    against = ", ".join(f'count_if(votes."{v}".passed = false)' for v in voters)
    return {
        "actions": db.execute(  # type: ignore[attr-defined]
            "SELECT action, count(*), sum(approved::int) FROM t GROUP BY action ORDER BY 2 DESC, 1"
        ).fetchall(),
        "days": db.execute(  # type: ignore[attr-defined]
            "SELECT CAST(datetime_utc AS DATE) AS d, count(*), sum(approved::int) FROM t "
            "GROUP BY d ORDER BY d"
        ).fetchall(),
        "vetoes": db.execute(f"SELECT {against} FROM t").fetchall(),  # type: ignore[attr-defined]
    }


def main() -> None:
    """Write the year once, then time each case beside its baseline."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=None, help="where the year is kept between runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before",
        default=None,
        help="another checkout's src/ (an earlier commit): its first query timed in the same run",
    )
    args = parser.parse_args()
    rounds = max(3, args.rounds)
    import duckdb

    work = Path(args.dir or os.path.join(os.environ.get("TMPDIR", "/tmp"), "rtrace-year"))
    root = work / "log"
    os.environ.setdefault("REASONING_TRACE_KEY", str(work / "signing.key"))
    if not root.is_dir() or len(list(root.glob("*.jsonl"))) != DAYS:
        shutil.rmtree(root, ignore_errors=True)
        today = int(time.time()) // 86400 * 86400 * 1_000_000
        t = time.perf_counter()
        size = build(
            str(root), DAYS * PER_DAY, realistic=True, per_day=PER_DAY,
            day0_us=today - (DAYS - 1) * DAY_US,
        )  # fmt: skip
        print(f"wrote {DAYS * PER_DAY:,} records ({size / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    print(f"year: {root} ({DAYS} day files x {PER_DAY:,})")

    ours_wall, ours_in, duck_wall, duck_in, before = [], [], [], [], []
    for _ in range(rounds):
        if args.before:
            drop_index(root)
            before.append(fresh(OURS_FIRST, str(root), args.before)[0])
        drop_index(root)
        wall, inside = fresh(OURS_FIRST, str(root))
        ours_wall.append(wall)
        ours_in.append(inside)
        wall, inside = fresh(DUCK_FIRST, str(root))
        duck_wall.append(wall)
        duck_in.append(inside)
    print("\n| first query on the year, cold | rtrace (builds the index) | DuckDB (loads a table) "
          "| ratio (median) |")  # fmt: skip
    print("|---|---|---|---|")
    for label, ours, duck in (
        ("end to end, fresh process", ours_wall, duck_wall),
        ("inside the process", ours_in, duck_in),
    ):
        ratio = statistics.median(ours) / statistics.median(duck)
        print(f"| {label} | {spread(ours)} | {spread(duck)} | {ratio:.2f}x DuckDB's time |")
    if before:
        ratio = statistics.median(before) / statistics.median(duck_wall)
        print(f"| before (`--before`), end to end | {spread(before)} | | {ratio:.2f}x |")

    # Warm: the index is built (the last round above); one more catch-up is a no-op.
    with DecisionLog(str(root), create=False) as log:
        log.stats()
        ours_stats = []
        for _ in range(rounds):
            t = time.perf_counter()
            stats = log.stats()
            ours_stats.append(time.perf_counter() - t)
        subject = Filter.build(subject={"agent_id": "agent-3"})
        t = time.perf_counter()
        log.query(subject, limit=20, newest_first=True)
        first_subject = time.perf_counter() - t
    db = duckdb.connect()
    db.execute("SET enable_progress_bar = false")
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"CREATE TABLE t AS SELECT * FROM read_json_auto('{root}/*.jsonl')")
    duck_warm = []
    for _ in range(rounds):
        t = time.perf_counter()
        duck = duck_stats(db)
        duck_warm.append(time.perf_counter() - t)
    assert stats.total == sum(n for _a, n, _ok in duck["actions"])  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": SRC}
    cli = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "reasoning_trace", "--dir", str(root), "stats", "--json"],
            capture_output=True, check=True, env=env,
        )  # fmt: skip
        cli.append(time.perf_counter() - t)
    assert json.loads(out.stdout)["total"] == stats.total
    ratio = statistics.median(ours_stats) / statistics.median(duck_warm)
    print("\n| `stats` over the year, warm | rtrace | DuckDB table, GROUP BY | ratio (median) |")
    print("|---|---|---|---|")
    print(f"| in one process | {spread(ours_stats)} | {spread(duck_warm)} | "
          f"{ratio:.2f}x DuckDB's time |")  # fmt: skip
    print(f"| `rtrace stats --json`, fresh process | {spread(cli)} | | |")
    print(f"\nfirst query on a subject after the build (indexes the subjects): "
          f"{first_subject:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
