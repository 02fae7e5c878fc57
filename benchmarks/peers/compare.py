"""The peers group (issue 17): Gatehouse and Keycloak side by side on the same PostgreSQL, the
same machine and the same wrk settings (2 threads, 32 connections), one server under load at a
time: password login, refresh (each refresh token spent once, on both) and the bearer read
(Gatehouse's GET /api/auth/profile, Keycloak's userinfo), 200 seeded users each with one
argon2id hash at Gatehouse's parameters (m=19 MiB, t=2, p=1).

Each server is warmed the same way before anything is measured: its first `--cold` seconds of
each route are measured apart (the `*_cold_per_s` figures: a fresh JVM is slow until its JIT
has compiled the hot paths), then logins until `--warmup` seconds of logins have passed (rates
kept 10 s at a time in `peers_warmup`, the curve of the warm-up), then 10 s of refresh and 10 s
of reads (their code paths have their own JIT warm-up). Then `--runs` rounds, the servers'
order alternating each round; each ratio is taken within a round and its median reported.

    .venv/bin/python benchmarks/peers/compare.py [--runs 3] [--seconds 10] [--warmup 100]
        [--cold 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import factors
import harness
import httpx
import routes
import seed

from peers import keycloak
from peers.load import CONNECTIONS, THREADS, measure

USERS = 200
LOGIN_USERS = 16  # the login runs cycle over 16 accounts, as routes' login.lua
READ_USERS = 8  # the bearer reads cycle over 8 users' tokens, as routes' profile.lua
REFRESH_SESSIONS = 2 * CONNECTIONS  # live refresh tokens dealt out to the wrk threads
WARM_CHUNK = 10.0  # seconds of each warm-up login run (one point of the curve)
WARM_ROUTE = 10.0  # refresh and reads after the login warm-up, unmeasured
HASH_SECONDS = 2.0  # the raw argon2id rate, on either side of each login run

Env = Callable[[], dict[str, str]]


@dataclass
class Server:
    """One server under test: its three routes as wrk scripts, and the process trees whose CPU a
    request is charged with (the server, PostgreSQL)."""

    name: str  # figure prefix: gatehouse, keycloak
    read: str  # what its bearer read is called: profile, userinfo
    url: str
    pid: int
    login: tuple[str, Env]
    refresh: tuple[str, Env]  # each call logs in fresh sessions: rotation spends the tokens
    reads: tuple[str, Env]
    pids: dict[str, list[int]]

    def route(self, which: str, seconds: float) -> dict[str, Any]:
        """One run of a route; after a login run, the server is left to finish the logins wrk
        left in flight before anything else runs (`harness.settle`)."""
        script, env = {"login": self.login, "refresh": self.refresh, self.read: self.reads}[which]
        result = measure(self.url, script, env(), seconds, self.pids)
        if which == "login":
            result["settled_s"] = harness.settle(self.pids["server"])
        return result


def gatehouse_sessions(url: str, emails: list[str]) -> tuple[list[str], list[str]]:
    """(access tokens, refresh tokens), one password login each, 8 at a time."""

    def login(email: str) -> dict[str, Any]:
        with httpx.Client(base_url=url, timeout=120) as client:
            reply = client.post("/api/auth/login", json=seed.login_body(email))
            reply.raise_for_status()
            data: dict[str, Any] = reply.json()["data"]
            return data

    with ThreadPoolExecutor(8) as pool:
        data = list(pool.map(login, emails))
    return [d["token"] for d in data], [d["refresh_token"] for d in data]


def gatehouse(url: str, pid: int, emails: list[str], pids: dict[str, list[int]]) -> Server:
    login_env = {"BENCH_EMAILS": ",".join(emails[:LOGIN_USERS]), "BENCH_PASSWORD": seed.PASSWORD}
    return Server(
        name="gatehouse",
        read="profile",
        url=url,
        pid=pid,
        login=("login", lambda: login_env),
        refresh=(
            "refresh",
            lambda: {
                "BENCH_REFRESH": ",".join(gatehouse_sessions(url, emails[:REFRESH_SESSIONS])[1]),
                "BENCH_THREADS": str(THREADS),
            },
        ),
        reads=(
            "profile",
            lambda: {"BENCH_TOKENS": ",".join(gatehouse_sessions(url, emails[:READ_USERS])[0])},
        ),
        pids={"server": [pid], **pids},
    )


def keycloak_server(kc: keycloak.Keycloak, users: list[str], pids: dict[str, list[int]]) -> Server:
    common = {"BENCH_PATH": keycloak.TOKEN_PATH, "BENCH_CLIENT": keycloak.CLIENT}
    login_env = {
        **common,
        "BENCH_USERS": ",".join(users[:LOGIN_USERS]),
        "BENCH_PASSWORD": seed.PASSWORD,
    }
    return Server(
        name="keycloak",
        read="userinfo",
        url=kc.url,
        pid=kc.pid,
        login=("kc_login", lambda: login_env),
        refresh=(
            "kc_refresh",
            lambda: {
                **common,
                "BENCH_REFRESH": ",".join(
                    keycloak.sessions(kc.url, users[:REFRESH_SESSIONS], seed.PASSWORD)[1]
                ),
                "BENCH_THREADS": str(THREADS),
            },
        ),
        reads=(
            "bearer_get",
            lambda: {
                "BENCH_PATH": keycloak.USERINFO_PATH,
                "BENCH_TOKENS": ",".join(
                    keycloak.sessions(kc.url, users[:READ_USERS], seed.PASSWORD, "openid")[0]
                ),
            },
        ),
        pids={"server": [kc.pid], **pids},
    )


def warm(server: Server, warmup: float, cold: float) -> dict[str, Any]:
    """The same warm-up for every server: the first `cold` seconds of each route measured apart
    (login, refresh, read, in that order, on a server that has served nothing), then logins
    until `warmup` seconds of them have run, then WARM_ROUTE seconds of refresh and of reads."""
    print(f"   warming {server.name}: {warmup:g} s of logins", flush=True)
    first = server.route("login", cold)
    out: dict[str, Any] = {
        "login_cold": first,
        "refresh_cold": server.route("refresh", cold),
        f"{server.read}_cold": server.route(server.read, cold),
    }
    curve = [first]
    left = warmup - cold
    while left > 0.5:
        chunk = min(WARM_CHUNK, left)
        curve.append(server.route("login", chunk))
        left -= chunk
    server.route("refresh", WARM_ROUTE)
    server.route(server.read, WARM_ROUTE)
    # The rate, and what tells a JIT warming up (the server's CPU a login falling) from a busy
    # host (the cores the rest of the machine took).
    out["login_curve_per_s"] = [c["per_s"] for c in curve]
    out["login_curve_cpu_ms"] = [c["server_cpu_ms"] for c in curve]
    out["login_curve_other_cores"] = [c["other_cores"] for c in curve]
    return out


def one_round(server: Server, seconds: float, peers: list[Server]) -> dict[str, Any]:
    """Login (the raw argon2id rate measured on either side), refresh, read; the server's peak
    resident memory over the three. It starts once its peers and PostgreSQL have gone quiet (a
    JVM goes on compiling and collecting after its load; autovacuum follows a run's writes), so
    that no server is charged for the last one's leftovers. A precaution: in 0db028b's bench
    the wait was 0.5-1.0 s and Gatehouse's CPU a refresh the same whichever ran first."""
    quiet = [p for peer in peers for p in peer.pids["server"]] + server.pids.get("postgres", [])
    waited = harness.settle(quiet)
    before = routes.hash_rate(HASH_SECONDS)
    with routes.RssWatch(server.pid) as login_watch:
        login = server.route("login", seconds)
    hashes = (before + routes.hash_rate(HASH_SECONDS)) / 2
    with routes.RssWatch(server.pid) as watch:
        refresh = server.route("refresh", seconds)
        read = server.route(server.read, seconds)
    return {
        "login": login,
        "refresh": refresh,
        server.read: read,
        "hash_per_s": round(hashes, 2),
        "rss_mb": max(login_watch.total_max, watch.total_max),
        "quiet_after_s": waited,
    }


def run(
    bench: harness.Bench,
    runs: int = 3,
    seconds: float = 10,
    warmup: float = 100,
    cold: float = 5,
) -> dict[str, Any]:
    started = time.monotonic()
    phases: dict[str, float] = {}
    chosen = keycloak.prepare()  # the JDK, the distribution, its build: fail before any load
    cores = os.cpu_count() or 1
    idle_before = factors.machine_busy()
    time.sleep(2)
    idle_cores = (factors.machine_busy() - idle_before) / 2
    bench.start("relay", "relay")
    bench.start("courier", "courier")
    api = bench.api(workers=cores)
    emails = asyncio.run(seed.users(bench.stack.env, USERS, f"k{uuid.uuid4().hex[:6]}"))
    services = factors.service_pids()
    pg = {"postgres": [services["postgres"]]} if "postgres" in services else {}
    # Gatehouse's other roles on the same requests: the relay publishing each change's outbox
    # event to Kafka (and chaining audit records), the courier, Redis. Keycloak uses none of
    # them (its events are off), so its figures have no such share.
    roles = [bench.stack.roles[r].popen.pid for r in ("relay", "courier")]
    roles += [services[k] for k in ("redis", "kafka") if k in services]
    admin_url = harness.service_urls()["POSTGRES_URL"]
    with keycloak.running(admin_url, bench.stack.tmp) as kc:
        imported = keycloak.configure(kc, USERS, seed.PASSWORD)
        servers = [
            keycloak_server(kc, imported["users"], pg),
            gatehouse(api.url, api.popen.pid, emails, {**pg, "roles": roles}),
        ]
        time.sleep(3)
        idle_rss = {s.name: harness.rss_mb(s.pid) for s in servers}
        phases["setup"] = time.monotonic() - started
        warmed = {s.name: warm(s, warmup, cold) for s in servers}
        phases["warm_up"] = time.monotonic() - started - phases["setup"]
        rounds: list[dict[str, dict[str, Any]]] = []
        for n in range(runs):
            order = servers if n % 2 == 0 else servers[::-1]
            print(f"   round {n + 1}: {', '.join(s.name for s in order)}", flush=True)
            rounds.append(
                {s.name: one_round(s, seconds, [o for o in servers if o is not s]) for s in order}
            )
        phases["rounds"] = time.monotonic() - started - phases["setup"] - phases["warm_up"]
        secrets = keycloak.password_secrets(admin_url)
        own_hash = keycloak.own_hash(admin_url)
    phases["total"] = time.monotonic() - started
    bench.stop("api")
    return figures(servers, warmed, rounds, idle_rss) | {
        "peers_runs": per_round(rounds),
        "peers_warmup": {
            name: {
                **{k: v for k, v in w.items() if k.startswith("login_curve_")},
                "cold": {k: v for k, v in w.items() if k.endswith("_cold")},
            }
            for name, w in warmed.items()
        },
        "peers_method": {
            **chosen,
            "keycloak_start": "kc.sh build (--db=postgres --health-enabled=true), then start "
            "--optimized --cache=local, HTTP on 127.0.0.1, its own database on the services' "
            "PostgreSQL; JVM options Keycloak's defaults (-Xms64m -Xmx512m, G1)",
            "keycloak_ready_seconds": kc.started_s,
            "keycloak_realm_import_seconds": imported["import_seconds"],
            "keycloak_argon2_as_it_hashes": own_hash,
            "keycloak_password_secrets": secrets,
            "gatehouse_api_workers": cores,
            "wrk": {"threads": THREADS, "connections": CONNECTIONS, "seconds": seconds},
            "users": USERS,
            "login_users": LOGIN_USERS,
            "read_users": READ_USERS,
            "refresh_sessions": REFRESH_SESSIONS,
            "warmup_login_seconds": warmup,
            "cold_seconds": cold,
            "hash_seconds_each_side": HASH_SECONDS,
            "idle_cores_busy_before": round(idle_cores, 2),
            "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        },
    }


def per_round(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each round's rates, latencies and CPU a request, for the record."""
    keep = ("per_s", "p50_ms", "p99_ms", "non2xx", "errors", "server_cpu_ms", "postgres_cpu_ms")
    keep += ("roles_cpu_ms", "other_cores", "settled_s")
    out = []
    for one in rounds:
        row: dict[str, Any] = {}
        for name, result in one.items():
            for route, r in result.items():
                row[f"{name}_{route}"] = (
                    {k: r[k] for k in keep if k in r} if isinstance(r, dict) else r
                )
        out.append(row)
    return out


def figures(
    servers: list[Server],
    warmed: dict[str, dict[str, Any]],
    rounds: list[dict[str, dict[str, Any]]],
    idle_rss: dict[str, float],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in servers:
        routes_ = ("login", "refresh", s.read)
        for route in routes_:
            results = [r[s.name][route] for r in rounds]
            out[f"{s.name}_{route}_per_s"] = harness.median([x["per_s"] for x in results])
            out[f"{s.name}_{route}_p50_ms"] = harness.median([x["p50_ms"] for x in results])
            out[f"{s.name}_cpu_ms_per_{route}"] = harness.median(
                [x["server_cpu_ms"] for x in results], 3
            )
            for part in ("postgres", "roles"):
                if any(f"{part}_cpu_ms" in x for x in results):
                    out[f"{s.name}_{part}_cpu_ms_per_{route}"] = harness.median(
                        [x.get(f"{part}_cpu_ms", 0.0) for x in results], 3
                    )
        for route in routes_:
            out[f"{s.name}_{route}_cold_per_s"] = warmed[s.name][f"{route}_cold"]["per_s"]
        out[f"{s.name}_login_to_hash_ratio"] = harness.median(
            [r[s.name]["login"]["per_s"] / r[s.name]["hash_per_s"] for r in rounds], 3
        )
        out[f"{s.name}_rss_mb"] = harness.median([r[s.name]["rss_mb"] for r in rounds], 1)
        out[f"{s.name}_rss_idle_mb"] = idle_rss[s.name]

    def ratio(ours: str, theirs: str) -> float:
        return harness.median(
            [r["gatehouse"][ours]["per_s"] / r["keycloak"][theirs]["per_s"] for r in rounds], 2
        )

    out["login_to_keycloak_ratio"] = ratio("login", "login")
    out["refresh_to_keycloak_ratio"] = ratio("refresh", "refresh")
    out["profile_to_keycloak_userinfo_ratio"] = ratio("profile", "userinfo")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=100, help="seconds of logins first")
    parser.add_argument("--cold", type=float, default=5, help="first seconds measured apart")
    args = parser.parse_args()
    with harness.bench_stack() as bench:
        result = run(bench, args.runs, args.seconds, args.warmup, args.cold)
    harness.write_result("peers", {**result, "machine": harness.machine()})
    for key, value in result.items():
        if not isinstance(value, dict | list):
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
