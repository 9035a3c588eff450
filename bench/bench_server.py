"""The HTTP API under load, from a second process on loopback (Debian's ``wrk``).

Starts ``rtrace serve`` on a temporary log (``sync="batch"``: every 201 is durable), then:

- ``POST /v1/decisions`` from 32 concurrent connections: decisions/s and latency percentiles;
- ``GET /v1/decisions?limit=50&action=rollback&voter=safety`` at a fixed 200 requests/s
  (``wrk2``-style pacing is not in ``wrk``, so this uses ``-c 4 -t 2`` and reports the rate
  reached beside the latencies);
- as a baseline in the same run, ``GET /healthz`` at full speed: what the HTTP stack alone
  allows on this machine.

    python bench/bench_server.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

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


def wrk(args: list[str]) -> dict[str, float]:
    """Run wrk --latency; parse requests/s and the latency percentiles (ms)."""
    out = subprocess.run(
        ["wrk", "--latency", *args], capture_output=True, text=True, check=True
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
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


def main() -> None:
    """Start the server, run each load, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench_server needs Debian's wrk (apt-get install wrk)")
    with served("--workers", str(args.workers)) as (url, work):
        lua = os.path.join(work, "post.lua")
        with open(lua, "w") as fh:
            fh.write(POST_LUA)
        d = f"{args.seconds}s"
        health = wrk(["-t", "2", "-c", "32", "-d", d, f"{url}/healthz"])
        post = wrk(["-t", "2", "-c", "32", "-d", d, "-s", lua, f"{url}/v1/decisions"])
        httpx.get(f"{url}/v1/decisions?limit=1&action=x", timeout=60)  # index caught up
        get = wrk(
            [
                "-t",
                "2",
                "-c",
                "4",
                "-d",
                d,
                f"{url}/v1/decisions?limit=50&action=upgrade_proposal&voter=performance",
            ]
        )
        records = httpx.get(f"{url}/healthz").json()["records"]
        print(
            f"| load (wrk, {args.seconds} s, loopback) | requests/s | p50 ms | p99 ms | non-2xx |"
        )
        print("|---|---|---|---|---|")
        for label, r in (
            ("GET /healthz, 32 connections (HTTP stack alone)", health),
            ("POST /v1/decisions, 32 connections, durable", post),
            ("GET /v1/decisions?limit=50 + 2 filters, 4 connections", get),
        ):
            print(
                f"| {label} | {r['rps']:,.0f} | {r.get('p50', float('nan')):.1f} | "
                f"{r.get('p99', float('nan')):.1f} | {r['errors']:.0f} |"
            )
        print(f"\n{records:,} decisions stored")


if __name__ == "__main__":
    main()
