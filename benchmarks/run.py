"""Every benchmark of issue 6 in one run (what `scripts/bench` runs): the HTTP routes, the job
queues and Socket.IO, the event path through Kafka, issue 13's two new sign-ins (password +
TOTP, passkey), and issue 16's cost of the audit record on login and refresh. Each group gets a
fresh stack (database, Redis database, processes). Writes benchmarks/results/latest.json and
latest.md.

    .venv/bin/python benchmarks/run.py [--runs 3] [--seconds 10]
        [--only routes,jobs,events,factors,audit]
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    "login_to_hash_ratio": (">=", 0.95, "Keycloak 30-51 logins/s, Rust argon2id server 69/s"),
    "refresh_per_s": (">=", 3000, "Keycloak: 120 a vCPU"),
    "profile_per_s": (">=", 5000, "Keycloak userinfo: about 3,700/s on 2 CPUs"),
    "otp_verify_per_s": (">=", 2000, ""),
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
        lines.append(f"| `{key}` | {figures[key]} | {target_text} | {verdict} | {peer} |")
    return "\n".join(lines) + "\n"


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


def groups() -> dict[str, Callable[[harness.Bench, int, float], dict[str, Any]]]:
    # Imported here: each module is also a script of its own.
    import audit
    import events
    import factors
    import jobs
    import routes

    return {
        "routes": lambda bench, runs, seconds: routes.run(bench, runs, seconds),
        "jobs": lambda bench, runs, _seconds: jobs.run(bench, runs),
        "events": lambda bench, runs, _seconds: events.run(bench, runs),
        "factors": lambda bench, runs, seconds: factors.run(bench, runs, seconds),
        "audit": lambda bench, runs, seconds: audit.run(bench, runs, seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median taken)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per load run")
    parser.add_argument(
        "--only", default="", help="comma-separated groups: routes,jobs,events,factors,audit"
    )
    args = parser.parse_args()
    chosen = groups()
    only = [g for g in args.only.split(",") if g] or list(chosen)
    figures: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in only:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        with harness.bench_stack() as bench:
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
        "group_seconds": timings,
        "figures": {k: v for k, v in figures.items() if not isinstance(v, dict | list)},
        "details": {k: v for k, v in figures.items() if isinstance(v, dict | list)},
        "targets": {k: {"op": op, "target": t, "peers": p} for k, (op, t, p) in TARGETS.items()},
        "met": met,
    }
    harness.write_result("latest", report)
    markdown = table(report["figures"], met)
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
