"""Every benchmark of issue 6 in one run (what `scripts/bench` runs): the HTTP routes, the job
queues and Socket.IO, the event path through Kafka, issue 13's two new sign-ins (password +
TOTP, passkey), issue 16's cost of the audit record on login and refresh and its webhook
deliveries, and issue 17's measures beside Gatehouse: Keycloak on the same routes (the peers)
and a bare ASGI route on the api's server stack (the ceiling). Each group gets a fresh stack
(database, Redis database, processes). Writes benchmarks/results/latest.json and latest.md.

    .venv/bin/python benchmarks/run.py [--runs 3] [--seconds 10] [--no-peers]
        [--only routes,ceiling,peers,jobs,events,factors,audit,webhooks]
        [--warmup 100] [--cold 5]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

# figure: (comparison, target or the figure it must beat, what the target is, peers)
TARGETS: dict[str, tuple[str, float | str, str]] = {
    "login_to_hash_ratio": (">=", 0.95, "the raw argon2id rate, same run"),
    "refresh_per_s": (">=", 3000, ""),
    "profile_per_s": (">=", 5000, ""),
    "otp_verify_per_s": (">=", 2000, ""),
    "refresh_to_keycloak_ratio": (">=", 4, "issue 17: refresh ÷ Keycloak's, same round"),
    "profile_to_keycloak_userinfo_ratio": (
        ">=",
        2,
        "issue 17: profile ÷ Keycloak's userinfo, same round",
    ),
    "profile_to_bare_ratio": (">=", 0.7, "issue 17: profile ÷ a bare route on the same stack"),
    "register_to_email_p95_ms": ("<=", 250, "at 50 registrations/s"),
    "job_noop_per_s_python": (">=", "job_noop_per_s_node", "Node bullmq, same Redis"),
    "job_to_socket_p99_ms": ("<=", 50, "at 500 jobs/s"),
    "api_rss_idle_mb": ("<=", 120, "one api process"),
    "api_rss_login_load_mb": ("<=", "2 x api_rss_idle_mb", "bounded under login load"),
    "passkey_signin_per_s": (
        ">=",
        "refresh_per_s_same_driver",
        "issue 13: verifies no password hash; refresh with the same driver",
    ),
}
# Our figure: the peer's figure measured in the same run, shown beside it in latest.md.
BESIDE: dict[str, tuple[str, str]] = {
    # routes' own wrk settings differ (1 thread; login 8 connections): the peers group's
    # gatehouse_* figures are the like-for-like ones.
    "login_per_s": ("keycloak_login_per_s", "Keycloak (peers group)"),
    "login_to_hash_ratio": ("keycloak_login_to_hash_ratio", "Keycloak (peers group)"),
    "refresh_per_s": ("keycloak_refresh_per_s", "Keycloak (peers group)"),
    "profile_per_s": ("keycloak_userinfo_per_s", "Keycloak userinfo (peers group)"),
    "api_rss_login_load_total_mb": ("keycloak_rss_mb", "Keycloak, peak (peers group)"),
    "gatehouse_login_per_s": ("keycloak_login_per_s", "Keycloak"),
    "gatehouse_refresh_per_s": ("keycloak_refresh_per_s", "Keycloak"),
    "gatehouse_profile_per_s": ("keycloak_userinfo_per_s", "Keycloak userinfo"),
    "gatehouse_login_cold_per_s": ("keycloak_login_cold_per_s", "Keycloak"),
    "gatehouse_refresh_cold_per_s": ("keycloak_refresh_cold_per_s", "Keycloak"),
    "gatehouse_profile_cold_per_s": ("keycloak_userinfo_cold_per_s", "Keycloak userinfo"),
    "gatehouse_login_to_hash_ratio": ("keycloak_login_to_hash_ratio", "Keycloak"),
    "gatehouse_rss_mb": ("keycloak_rss_mb", "Keycloak"),
    "gatehouse_rss_idle_mb": ("keycloak_rss_idle_mb", "Keycloak"),
    "ceiling_profile_per_s": ("bare_route_per_s", "bare route"),
}
ORDER = [
    "hash_per_s",
    "login_per_s",
    "login_to_hash_ratio",
    "register_verify_per_s",
    "refresh_per_s",
    "profile_per_s",
    "otp_verify_per_s",
    "register_to_email_p50_ms",
    "register_to_email_p95_ms",
    "job_read_user_per_s",
    "job_noop_per_s_python",
    "job_noop_per_s_node",
    "job_to_socket_p99_ms",
    "relay_events_per_s",
    "api_rss_idle_mb",
    "api_rss_login_load_mb",
    "login_per_s_same_stack",
    "totp_signin_per_s",
    "totp_signin_p50_ms",
    "totp_signin_p99_ms",
    "totp_to_login_ratio",
    "passkey_signin_per_s",
    "passkey_signin_p50_ms",
    "passkey_signin_p99_ms",
    "refresh_per_s_same_driver",
    "refresh_per_s_wrk_same_stack",
    "passkey_to_refresh_ratio",
    "totp_limited_by",
    "passkey_limited_by",
    "refresh_to_keycloak_ratio",
    "profile_to_keycloak_userinfo_ratio",
    "login_to_keycloak_ratio",
    "keycloak_login_to_hash_ratio",
    "gatehouse_login_to_hash_ratio",
    "gatehouse_login_per_s",
    "keycloak_login_per_s",
    "gatehouse_login_cold_per_s",
    "keycloak_login_cold_per_s",
    "gatehouse_refresh_per_s",
    "keycloak_refresh_per_s",
    "gatehouse_refresh_cold_per_s",
    "keycloak_refresh_cold_per_s",
    "gatehouse_profile_per_s",
    "keycloak_userinfo_per_s",
    "gatehouse_profile_cold_per_s",
    "keycloak_userinfo_cold_per_s",
    "gatehouse_rss_mb",
    "keycloak_rss_mb",
    "gatehouse_rss_idle_mb",
    "keycloak_rss_idle_mb",
    "profile_to_bare_ratio",
    "ceiling_profile_per_s",
    "bare_route_per_s",
    "webhook_deliveries_per_s",
]


def judge(figures: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for key, (op, target, _) in TARGETS.items():
        if key not in figures:
            continue
        if target == "2 x api_rss_idle_mb":
            bound = 2 * float(figures.get("api_rss_idle_mb", 0))
        elif isinstance(target, str):
            if target not in figures:
                continue
            bound = float(figures[target])
        else:
            bound = float(target)
        value = float(figures[key])
        met[key] = value >= bound if op == ">=" else value <= bound
    return met


def table(figures: dict[str, Any], met: dict[str, bool]) -> str:
    lines = ["| figure | value | target | met | compared with |", "|---|---:|---|---|---|"]
    shown = [k for k in figures if not isinstance(figures[k], dict | list)]
    for key in [k for k in ORDER if k in shown] + sorted(set(shown) - set(ORDER)):
        op, target, peer = TARGETS.get(key, ("", "", ""))
        target_text = f"{op} {target}" if op else ""
        verdict = "" if key not in met else ("yes" if met[key] else "**no**")
        beside = BESIDE.get(key)
        if beside and beside[0] in figures:
            measured = f"{beside[1]}: {figures[beside[0]]} (`{beside[0]}`)"
            peer = f"{measured}; {peer}" if peer else measured
        lines.append(f"| `{key}` | {figures[key]} | {target_text} | {verdict} | {peer} |")
    return "\n".join(lines) + "\n"


# (what, Gatehouse's figure, the peer's figure, the ratio's figure or "")
SIDE_BY_SIDE = [
    (
        "password logins/s",
        "gatehouse_login_per_s",
        "keycloak_login_per_s",
        "login_to_keycloak_ratio",
    ),
    ("  first seconds (cold)", "gatehouse_login_cold_per_s", "keycloak_login_cold_per_s", ""),
    (
        "logins ÷ raw argon2id rate",
        "gatehouse_login_to_hash_ratio",
        "keycloak_login_to_hash_ratio",
        "",
    ),
    ("refresh/s", "gatehouse_refresh_per_s", "keycloak_refresh_per_s", "refresh_to_keycloak_ratio"),
    ("  first seconds (cold)", "gatehouse_refresh_cold_per_s", "keycloak_refresh_cold_per_s", ""),
    (
        "profile (Keycloak: userinfo)/s",
        "gatehouse_profile_per_s",
        "keycloak_userinfo_per_s",
        "profile_to_keycloak_userinfo_ratio",
    ),
    ("  first seconds (cold)", "gatehouse_profile_cold_per_s", "keycloak_userinfo_cold_per_s", ""),
    ("server CPU ms a login", "gatehouse_cpu_ms_per_login", "keycloak_cpu_ms_per_login", ""),
    ("server CPU ms a refresh", "gatehouse_cpu_ms_per_refresh", "keycloak_cpu_ms_per_refresh", ""),
    (
        "server CPU ms a profile read",
        "gatehouse_cpu_ms_per_profile",
        "keycloak_cpu_ms_per_userinfo",
        "",
    ),
    (
        "PostgreSQL CPU ms a refresh",
        "gatehouse_postgres_cpu_ms_per_refresh",
        "keycloak_postgres_cpu_ms_per_refresh",
        "",
    ),
    ("relay, courier, Redis, Kafka CPU ms a login", "gatehouse_roles_cpu_ms_per_login", "", ""),
    ("relay, courier, Redis, Kafka CPU ms a refresh", "gatehouse_roles_cpu_ms_per_refresh", "", ""),
    (
        "PostgreSQL CPU ms a profile read",
        "gatehouse_postgres_cpu_ms_per_profile",
        "keycloak_postgres_cpu_ms_per_userinfo",
        "",
    ),
    ("resident MB idle", "gatehouse_rss_idle_mb", "keycloak_rss_idle_mb", ""),
    ("resident MB, peak under load", "gatehouse_rss_mb", "keycloak_rss_mb", ""),
    (
        "profile/s beside the bare route",
        "ceiling_profile_per_s",
        "bare_route_per_s",
        "profile_to_bare_ratio",
    ),
]


def side_by_side(figures: dict[str, Any], met: dict[str, bool]) -> str:
    """Gatehouse beside Keycloak (the peers group) and beside the bare route (the ceiling
    group), each pair measured in the same run with the same wrk settings."""
    rows = [r for r in SIDE_BY_SIDE if r[1] in figures or r[2] in figures]
    if not rows:
        return ""
    lines = [
        "| same run, same wrk (2 threads, 32 connections) | Gatehouse | Keycloak or bare route "
        "| Gatehouse ÷ the other, same round | target |",
        "|---|---:|---:|---:|---|",
    ]
    for what, ours, theirs, ratio in rows:
        ratio_text, target = "", ""
        if ratio and ratio in figures:
            ratio_text = str(figures[ratio])
            if ratio in TARGETS:
                op, bound, _ = TARGETS[ratio]
                verdict = "met" if met.get(ratio) else "**not met**"
                target = f"{op} {bound}: {verdict}"
        lines.append(
            f"| {what} | {figures.get(ours, '')} | {figures.get(theirs, '')} | {ratio_text} "
            f"| {target} |"
        )
    return "\n".join(lines) + "\n\n"


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(harness.ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def groups(
    warmup: float = 100, cold: float = 5
) -> dict[str, Callable[[harness.Bench, int, float], dict[str, Any]]]:
    # Imported here: each module is also a script of its own.
    import audit
    import events
    import factors
    import jobs
    import routes
    from peers import ceiling, compare

    return {
        "routes": lambda bench, runs, seconds: routes.run(bench, runs, seconds),
        "ceiling": lambda bench, runs, seconds: ceiling.run(bench, runs, seconds),
        "peers": lambda bench, runs, seconds: compare.run(bench, runs, seconds, warmup, cold),
        "jobs": lambda bench, runs, _seconds: jobs.run(bench, runs),
        "events": lambda bench, runs, _seconds: events.run(bench, runs),
        "factors": lambda bench, runs, seconds: factors.run(bench, runs, seconds),
        "audit": lambda bench, runs, seconds: audit.run(bench, runs, seconds),
        "webhooks": webhooks,
    }


STACKLESS = {"webhooks"}  # groups that set up their own database and processes


def webhooks(_bench: harness.Bench | None, runs: int, _seconds: float) -> dict[str, Any]:
    """benchmarks/webhooks.py through its command line (it has no `run(bench, runs, seconds)`:
    it makes its own database and `gatehouse webhooks` process), `runs` times, the median of its
    `webhook_deliveries_per_s`; each run's result as it wrote it to results/webhooks.json."""
    script = Path(__file__).resolve().parent / "webhooks.py"
    env = {**os.environ, **{f"GATEHOUSE_TEST_{k}": v for k, v in harness.service_urls().items()}}
    results = []
    for _ in range(runs):
        subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=1800)
        results.append(json.loads((harness.RESULTS / "webhooks.json").read_text()))
    return {
        "webhook_deliveries_per_s": harness.median(
            [float(r["webhook_deliveries_per_s"]) for r in results], 1
        ),
        "webhook_runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median taken)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per load run")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated groups: routes,ceiling,peers,jobs,events,factors,audit,webhooks",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip Keycloak (the peers group): a quicker run"
    )
    parser.add_argument(
        "--warmup", type=float, default=100, help="peers: seconds of logins warming each server"
    )
    parser.add_argument(
        "--cold", type=float, default=5, help="peers: first seconds of each route measured apart"
    )
    args = parser.parse_args()
    chosen = groups(args.warmup, args.cold)
    only = [g for g in args.only.split(",") if g] or list(chosen)
    unknown = sorted(set(only) - set(chosen))
    if unknown:
        parser.error(f"unknown groups {unknown}; known: {','.join(chosen)}")
    if args.no_peers:
        only = [g for g in only if g != "peers"]
    figures: dict[str, Any] = {}
    timings: dict[str, float] = {}
    if "peers" in only:
        # The JDK, Keycloak's distribution and its build, before any group: a missing JDK fails
        # here, not after the other groups have run.
        from peers import keycloak

        started = time.monotonic()
        print("== peers: preparing Keycloak", flush=True)
        keycloak.prepare()
        timings["peers_prepare"] = round(time.monotonic() - started, 1)
    for name in only:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        stack = contextlib.nullcontext() if name in STACKLESS else harness.bench_stack()
        with stack as bench:
            result = chosen[name](bench, args.runs, args.seconds)
        timings[name] = round(time.monotonic() - started, 1)
        for key, value in result.items():
            if not isinstance(value, dict | list):
                print(f"   {key}: {value}", flush=True)
        figures.update(result)
    met = judge(figures)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": harness.machine(),
        "runs": args.runs,
        "seconds_per_run": args.seconds,
        "groups": only,
        "group_seconds": timings,
        "figures": {k: v for k, v in figures.items() if not isinstance(v, dict | list)},
        "details": {k: v for k, v in figures.items() if isinstance(v, dict | list)},
        "targets": {k: {"op": op, "target": t, "peers": p} for k, (op, t, p) in TARGETS.items()},
        "met": met,
    }
    harness.write_result("latest", report)
    markdown = side_by_side(report["figures"], met) + table(report["figures"], met)
    machine = report["machine"]
    header = (
        f"Gatehouse {report['commit']}, {report['date']}: {machine['cores']} cores "
        f"({machine['cpu']}), {machine['memory_gb']} GB, Python {machine['python']}; "
        f"median of {args.runs} runs of {args.seconds:g} s.\n\n"
    )
    (harness.RESULTS / "latest.md").write_text(header + markdown)
    print()
    print(header + markdown)
    print(json.dumps({"met": met}))


if __name__ == "__main__":
    main()
