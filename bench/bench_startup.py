"""Start-up: ``import reasoning_trace`` and ``rtrace tail -n 20`` in a fresh process.

Builds a log of ``--records`` decisions (default 100,000) spread over ``--days`` day files
(default 100) with the library (``DecisionLog.record_many``: checkpoints, tree hashes and the
head are the real writer's), then runs rounds of, each in a new interpreter:

- ``python -c pass``: the bare interpreter, the baseline (``site`` included);
- ``python -c "import click, orjson"``: the command line's own floor (its framework and its
  JSON library), for reference;
- ``python -c "import reasoning_trace"``;
- ``python -m reasoning_trace --dir LOG tail -n 20``, stdout a pipe (JSON Lines);
- ``python -m reasoning_trace --help``.

The commands of a round run one after the other, so each round's differences (import cost =
import minus bare) are taken under the same load; min/median/max over the rounds. Wall time of
the whole process, from ``fork`` to exit. Also ``-X importtime``'s cumulative figure for
``reasoning_trace`` (our own modules and what they pull in; ``site``'s imports are not in it).

The package's modules are byte-compiled once into a private cache (``PYTHONPYCACHEPREFIX``),
as an installed package is: ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module
from source in every process. ``--from-source`` measures that case instead.

``--compare SRC`` also times ``import reasoning_trace`` and ``tail`` from another checkout's
``src`` (an older commit, say) in the same rounds, for a before/after under the same load.

``--callgrind`` also counts the instructions each command executes, once, under
``valgrind --tool=callgrind`` (slow, but the same however loaded the machine is): a ratio to
the bare interpreter that a busy machine does not blur.

    python bench/bench_startup.py [--records N] [--days D] [--rounds R] [--from-source]
                                  [--compare OTHER/src] [--callgrind]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
sys.path.insert(0, SRC)

from reasoning_trace import DecisionLog  # noqa: E402
from reasoning_trace.demo import gate_decision  # noqa: E402

DAY_NS = 86_400 * 10**9
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def build(root: str, records: int, days: int) -> None:
    """``records`` gate decisions over ``days`` day files, recorded by the library."""
    import random

    rng = random.Random(19)
    per_day = -(-records // days)
    now = [START_NS]
    with DecisionLog(root, sync="never", clock=lambda: now[0]) as log:
        done = 0
        for day in range(days):
            now[0] = START_NS + day * DAY_NS
            batch = min(per_day, records - done)
            for start in range(0, batch, 1000):
                log.record_many(
                    gate_decision(rng, done + n) for n in range(start, min(batch, start + 1000))
                )
            done += batch


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds of ``cmd`` (stdout a pipe, read to the end), its CPU seconds (user +
    system: less disturbed by other processes than wall time), and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return took, cpu, done.stdout


def importtime(env: dict[str, str]) -> float:
    """``-X importtime``'s cumulative milliseconds for ``reasoning_trace``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import reasoning_trace"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == "reasoning_trace":
            return int(parts[1]) / 1000
    raise SystemExit("reasoning_trace not in the -X importtime output")


def instructions(cmd: list[str], env: dict[str, str], scratch: str) -> int:
    """Instructions ``cmd`` executes (callgrind's total)."""
    out = os.path.join(scratch, "callgrind.out")
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
        env=env,
        capture_output=True,
        check=True,
    )
    with open(out) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no total in the callgrind output")


def stats(values: list[float]) -> str:
    """``min / median / max`` in milliseconds."""
    ms = [v * 1000 for v in values]
    return f"{min(ms):.1f} / {statistics.median(ms):.1f} / {max(ms):.1f}"


def main() -> None:
    """Build the log, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--from-source", action="store_true", help="no byte-code cache")
    parser.add_argument("--keep", help="build the log here and keep it (reused if present)")
    parser.add_argument("--compare", metavar="SRC", help="another checkout's src to time too")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")

    base = tempfile.mkdtemp(prefix="bench-startup-")
    root = args.keep or os.path.join(base, "log")
    try:
        if not (args.keep and os.path.isdir(root)):
            t = time.perf_counter()
            build(root, args.records, args.days)
            print(
                f"built {args.records:,} records in {args.days} day files "
                f"in {time.perf_counter() - t:.1f} s",
                file=sys.stderr,
            )
        env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if args.from_source:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")
        py = sys.executable
        cmds = {
            "bare `python -c pass`": [py, "-c", "pass"],
            "`import click, orjson` (the CLI's floor)": [py, "-c", "import click, orjson"],
            "`import reasoning_trace`": [py, "-c", "import reasoning_trace"],
            "`rtrace tail -n 20` > pipe": [
                py,
                "-m",
                "reasoning_trace",
                "--dir",
                root,
                "tail",
                "-n",
                "20",
            ],
            "`rtrace --help`": [py, "-m", "reasoning_trace", "--help"],
        }
        envs = {name: env for name in cmds}
        if args.compare:
            other = dict(env, PYTHONPATH=os.path.abspath(args.compare))
            if not args.from_source:
                other["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache-compare")
            for name in ("`import reasoning_trace`", "`rtrace tail -n 20` > pipe"):
                cmds[f"{name}, {args.compare}"] = cmds[name]
                envs[f"{name}, {args.compare}"] = other
        for name, cmd in cmds.items():  # warm-up: byte-code written, files in the page cache
            run(cmd, envs[name])
        _, _, out = run(cmds["`rtrace tail -n 20` > pipe"], env)
        seqs = [json.loads(line)["seq"] for line in out.splitlines()]
        if seqs != list(range(args.records - 20, args.records)):
            raise SystemExit(f"tail printed the wrong records: {seqs}")

        times: dict[str, list[float]] = {name: [] for name in cmds}
        cpu: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                took, used, _ = run(cmd, envs[name])
                times[name].append(took)
                cpu[name].append(used)
        bare = times["bare `python -c pass`"]
        own = [importtime(env) / 1000 for _ in range(args.rounds)]
        own_other = [importtime(other) / 1000 for _ in range(args.rounds)] if args.compare else []

        mode = "from source" if args.from_source else "byte-compiled"
        print(
            f"\n{args.records:,} records in {args.days} day files; {args.rounds} rounds; "
            f"{mode}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}\n"
        )
        print(
            "| command | wall ms (min / median / max) | wall minus bare, same round "
            "| CPU ms (user + sys) |"
        )
        print("|---|---|---|---|")
        for name, values in times.items():
            extra = [v - b for v, b in zip(values, bare, strict=True)]
            print(
                f"| {name} | {stats(values)} | {stats(extra) if values is not bare else '-'} "
                f"| {stats(cpu[name])} |"
            )
        print(f"| `-X importtime`, `reasoning_trace` cumulative | {stats(own)} | - | - |")
        if own_other:
            print(f"| `-X importtime`, {args.compare} | {stats(own_other)} | - | - |")
        if args.callgrind:
            if shutil.which("valgrind") is None:
                raise SystemExit("--callgrind needs valgrind")
            print("\n| command | instructions (millions) | ratio to bare |\n|---|---|---|")
            counts = {name: instructions(cmd, envs[name], base) for name, cmd in cmds.items()}
            for name, count in counts.items():
                ratio = count / counts["bare `python -c pass`"]
                print(f"| {name} | {count / 1e6:.1f} | {ratio:.2f}x |")
        tail = times["`rtrace tail -n 20` > pipe"]
        imp = [v - b for v, b in zip(times["`import reasoning_trace`"], bare, strict=True)]
        print(
            f"\ntargets: import cost (median) {statistics.median(imp) * 1000:.1f} ms "
            f"(<= 30 ms); tail (median) {statistics.median(tail) * 1000:.1f} ms (<= 80 ms), "
            f"{statistics.median(tail) / statistics.median(bare):.2f}x the bare interpreter"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
