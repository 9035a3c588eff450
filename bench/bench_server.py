"""The HTTP API under load, from a second process on loopback (Debian's ``wrk``).

Starts ``rtrace serve --workers N`` on a temporary log (``sync="batch"``: every 201 is
durable) for each N of ``--workers`` (default 1 and 2), then runs ``--rounds`` rounds of:

- as the baseline of the same round, ``GET /healthz`` from 32 connections: what the HTTP stack
  alone allows on this machine;
- ``POST /v1/decisions`` from 32 concurrent connections: decisions/s and latency percentiles;
- ``GET /v1/decisions?limit=50&action=upgrade_proposal&voter=performance`` from 4 connections
  (``-t 2``; the index is caught up first).

It prints min/median/max of each rate over the rounds, the POST/healthz ratio of each round,
and the CPU a request took in the server (all its processes, ``/proc``) and in ``wrk``
(``getrusage``): on a shared machine the rates follow the neighbours' load, the CPU much less,
and ``cores ÷ CPU a request`` is the rate the two could reach with every core to themselves.
``--stack plain`` hides uvloop and httptools from the server (a shadow package that fails to
import, first on its ``PYTHONPATH``): uvicorn then runs asyncio and h11, as an install of plain
``uvicorn`` did before ``[server]`` asked for ``uvicorn[standard]``. The server runs the code
that ``PYTHONPATH`` points at (``PYTHONPATH=src`` for this checkout).

    python bench/bench_server.py [--seconds S] [--rounds R] [--workers 1 2] [--stack plain]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

import httpx

from serving import served

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"action":"upgrade_proposal","approved":true,"votes":{"safety":{"passed":true,\
"reason":"ok"},"cost":{"passed":true,"reason":"ok"},"alignment":{"passed":true,"reason":"ok"},\
"performance":{"passed":false,"reason":"slow"}},"subject":{"agent_id":"agent-3",\
"version":"1.4.2"},"reason":"bench"}'
"""
HIDDEN = ("uvloop", "httptools")
QUERY = "/v1/decisions?limit=50&action=upgrade_proposal&voter=performance"


def wrk(args: list[str]) -> dict[str, float]:
    """Run wrk --latency; parse requests/s and the latency percentiles (ms)."""
    out = subprocess.run(
        ["wrk", "--latency", *args], capture_output=True, text=True, check=True
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        if m:
            value, unit = float(m.group(1)), m.group(2)
            result[f"p{pct}"] = (
                value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
            )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


def hidden_stack(work: str) -> dict[str, str]:
    """Environment that hides uvloop and httptools from the server (see the module doc)."""
    for name in HIDDEN:
        os.makedirs(os.path.join(work, name))
        with open(os.path.join(work, name, "__init__.py"), "w") as fh:
            fh.write(f"raise ImportError('{name} is hidden: an install of plain uvicorn')\n")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([work, path] if path else [work])}


def server_cpu(work: str) -> float:
    """CPU seconds (user + system) used so far by the ``rtrace serve`` holding ``work`` and
    every process under it (its workers), from ``/proc/*/stat``; 0.0 off Linux."""
    if not os.path.isdir("/proc/self"):
        return 0.0
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    roots = []
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                command = fh.read()
        except OSError:  # ended while we looked
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
        if work.encode() in command and b"serve" in command:
            roots.append(pid)
    tree = list(roots)
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return sum(cpu[pid] for pid in set(tree))


def spread(values: list[float], digits: int = 0) -> str:
    """``min / median / max`` of ``values``."""
    return " / ".join(
        f"{v:,.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )


def measured(work: str, args: list[str]) -> dict[str, float]:
    """``wrk -t 2 ARGS``, plus the CPU milliseconds a request took in the server (``cpu_ms``,
    all its processes) and in ``wrk`` (``wrk_ms``)."""
    before, client = server_cpu(work), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk(["-t", "2", *args])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = max(1.0, result["requests"])
    result["cpu_ms"] = (server_cpu(work) - before) * 1000 / requests
    used = after.ru_utime + after.ru_stime - client.ru_utime - client.ru_stime
    result["wrk_ms"] = used * 1000 / requests
    return result


def run(workers: int, args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    """Every round against one ``rtrace serve --workers N``; the Markdown rows of its results."""
    rounds: dict[str, list[dict[str, float]]] = {"health": [], "post": [], "get": []}
    with served("--workers", str(workers), env=env) as (url, work):
        lua = os.path.join(work, "post.lua")
        with open(lua, "w") as fh:
            fh.write(POST_LUA)
        d = f"{args.seconds}s"
        wrk(["-t", "2", "-c", "32", "-d", "2s", f"{url}/healthz"])  # every worker up and warm
        for n in range(args.rounds):
            rounds["health"].append(measured(work, ["-c", "32", "-d", d, f"{url}/healthz"]))
            rounds["post"].append(
                measured(work, ["-c", "32", "-d", d, "-s", lua, f"{url}/v1/decisions"])
            )
            httpx.get(f"{url}/v1/decisions?limit=1&action=x", timeout=120)  # index caught up
            rounds["get"].append(measured(work, ["-c", "4", "-d", d, f"{url}{QUERY}"]))
            print(
                f"workers {workers} round {n + 1}: healthz {rounds['health'][-1]['rps']:,.0f}/s,"
                f" POST {rounds['post'][-1]['rps']:,.0f}/s, GET {rounds['get'][-1]['rps']:,.0f}/s",
                file=sys.stderr,
            )
        records = httpx.get(f"{url}/healthz").json()["records"]
    ratios = [p["rps"] / h["rps"] for p, h in zip(rounds["post"], rounds["health"], strict=True)]
    rows = []
    for key, label in (
        ("health", "`GET /healthz`, 32 connections (baseline: the HTTP stack)"),
        ("post", "`POST /v1/decisions`, 32 connections, each 201 durable"),
        ("get", "`GET /v1/decisions?limit=50` + 2 filters, 4 connections"),
    ):
        results = rounds[key]
        ratio = f"{spread(ratios, 2)}x" if key == "post" else ""
        ceiling = [args.cores * 1000 / (r["cpu_ms"] + r["wrk_ms"]) for r in results]
        rows.append(
            f"| {label} | {workers} | {spread([r['rps'] for r in results])} | {ratio} | "
            f"{statistics.median(r.get('p50', float('nan')) for r in results):.1f} | "
            f"{statistics.median(r.get('p99', float('nan')) for r in results):.1f} | "
            f"{statistics.median(r['cpu_ms'] for r in results):.2f} | "
            f"{statistics.median(r['wrk_ms'] for r in results):.2f} | "
            f"{statistics.median(ceiling):,.0f} | "
            f"{sum(r['errors'] for r in results):.0f} |"
        )
    print(f"workers {workers}: {records:,} decisions stored", file=sys.stderr)
    return rows


def main() -> None:
    """Start the server for each worker count, run the rounds, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per worker count (>= 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="cores for the CPU ceiling column (requests/s if server and wrk had them all)",
    )
    parser.add_argument(
        "--stack",
        choices=["standard", "plain"],
        default="standard",
        help="plain: hide uvloop and httptools from the server (asyncio + h11)",
    )
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (min/median/max)")
    if not shutil.which("wrk"):
        sys.exit("bench_server needs Debian's wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="rtrace-stack-") as shadow:
        env = hidden_stack(shadow) if args.stack == "plain" else {}
        rows = [row for workers in args.workers for row in run(workers, args, env)]
    print(
        f"| load (wrk, {args.seconds} s × {args.rounds} rounds, loopback, {args.stack} stack) "
        "| workers | requests/s min / median / max | POST ÷ healthz, same round "
        "| p50 ms (median) | p99 ms (median) | server CPU ms a request (median) "
        f"| wrk CPU ms a request (median) | {args.cores} cores ÷ CPU a request (median) "
        "| non-2xx |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
