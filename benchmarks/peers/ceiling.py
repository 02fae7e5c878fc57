"""The ceiling group (issue 17): how close `GET /api/auth/profile` comes to the fastest route its
server stack can serve. A bare ASGI route (`bare_app.py`) answers the same bytes (body and
headers recorded from a real profile answer) on the same server stack and worker count as
`gatehouse api`; both are driven by the same wrk script with the same tokens and settings as the
peers group (2 threads, 32 connections), one at a time, their order alternating each run, after a
3 s warm-up each. `profile_to_bare_ratio` is taken within each run, its median reported.

    .venv/bin/python benchmarks/peers/ceiling.py [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import factors
import harness
import httpx
import routes
import seed
from tests.conftest import free_port
from tests.e2e.stack import wait_ready

from peers.compare import READ_USERS, gatehouse_sessions
from peers.load import CONNECTIONS, THREADS, measure

BARE = Path(__file__).resolve().parent / "bare_app.py"
PROFILE = "/api/auth/profile"
WARM_UP = 3.0  # seconds of load on each server before the first measured run, as routes.py


def run(bench: harness.Bench, runs: int = 3, seconds: float = 10) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    bench.start("relay", "relay")
    bench.start("courier", "courier")
    api = bench.api(workers=cores)
    emails = asyncio.run(seed.users(bench.stack.env, READ_USERS, f"c{uuid.uuid4().hex[:6]}"))
    tokens = gatehouse_sessions(api.url, emails)[0]
    reply = httpx.get(f"{api.url}{PROFILE}", headers={"Authorization": f"Bearer {tokens[0]}"})
    reply.raise_for_status()
    recorded = bench.stack.tmp / "profile-answer.json"
    recorded.write_text(json.dumps({"body": reply.text, "headers": reply.headers.multi_items()}))
    port = free_port()
    log = bench.stack.tmp / "bare.log"
    env = {
        **os.environ,
        "GATEHOUSE_HOST": "127.0.0.1",
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_API_WORKERS": str(cores),
        "BENCH_BARE_RESPONSE": str(recorded),
    }
    with log.open("wb") as out:
        bare = subprocess.Popen(
            [sys.executable, str(BARE)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    bare_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(bare_url, bare, log)
        same = httpx.get(f"{bare_url}{PROFILE}").text == reply.text
        if not same:
            raise SystemExit("the bare route does not answer the profile's body")
        services = factors.service_pids()
        pg = {"postgres": [services["postgres"]]} if "postgres" in services else {}
        servers = {
            "profile": (api.url, {"server": [api.popen.pid], **pg}),
            "bare": (bare_url, {"server": [bare.pid], **pg}),
        }

        def one(name: str, run_seconds: float) -> dict[str, Any]:
            url, pids = servers[name]
            # Fresh tokens each run, as the peers group (the access token lives 15 minutes).
            env = {"BENCH_PATH": PROFILE, "BENCH_TOKENS": ",".join(tokens)}
            return measure(url, "bearer_get", env, run_seconds, pids)

        for name in servers:
            one(name, WARM_UP)
        rounds: list[dict[str, dict[str, Any]]] = []
        for n in range(runs):
            tokens = gatehouse_sessions(api.url, emails)[0]
            order = ["profile", "bare"] if n % 2 == 0 else ["bare", "profile"]
            with routes.RssWatch(bare.pid) as watch:
                rounds.append({name: one(name, seconds) for name in order})
            rounds[-1]["bare"]["rss_mb"] = watch.total_max
    finally:
        harness.stop_process(bare)
        bench.stop("api")

    def med(name: str, key: str, digits: int = 2) -> float:
        return harness.median([r[name][key] for r in rounds], digits)

    return {
        "bare_route_per_s": med("bare", "per_s"),
        "ceiling_profile_per_s": med("profile", "per_s"),
        "profile_to_bare_ratio": harness.median(
            [r["profile"]["per_s"] / r["bare"]["per_s"] for r in rounds], 3
        ),
        "bare_route_p50_ms": med("bare", "p50_ms"),
        "ceiling_profile_p50_ms": med("profile", "p50_ms"),
        "bare_cpu_ms_per_request": med("bare", "server_cpu_ms", 3),
        "ceiling_api_cpu_ms_per_profile": med("profile", "server_cpu_ms", 3),
        "ceiling_postgres_cpu_ms_per_profile": med("profile", "postgres_cpu_ms", 3) if pg else 0.0,
        "ceiling_runs": [
            {
                name: {
                    k: r[name][k]
                    for k in ("per_s", "p50_ms", "p99_ms", "server_cpu_ms", "other_cores")
                }
                for name in r
            }
            for r in rounds
        ],
        "ceiling_method": {
            "server": "uvicorn on uvloop, the api's options, Supervisor and SO_REUSEPORT sockets",
            "workers": cores,
            "wrk": {"threads": THREADS, "connections": CONNECTIONS, "seconds": seconds},
            "script": "lua/bearer_get.lua, the same tokens on both",
            "answer_bytes": len(reply.content),
            "bare_rss_mb": med("bare", "rss_mb", 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with harness.bench_stack() as bench:
        result = run(bench, args.runs, args.seconds)
    harness.write_result("ceiling", {**result, "machine": harness.machine()})
    for key, value in result.items():
        if not isinstance(value, dict | list):
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
