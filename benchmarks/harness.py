"""What every benchmark shares: the real services' addresses, a stack of gatehouse processes on a
database and Redis database of its own, wrk as the load generator, memory readings and the
statistics (medians of runs, percentiles of samples).

The processes under test are started exactly as in production (`python -m gatehouse <role>`),
through the end-to-end tests' `Stack`, so a benchmark measures the same code the tests check."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests' Stack and MailSink are reused, not copied
    sys.path.insert(0, str(ROOT))

from tests.conftest import MailSink, free_port  # noqa: E402
from tests.e2e.stack import Role, Stack, children, own_redis_db  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LUA = ROOT / "benchmarks" / "lua"
SERVICES = ("POSTGRES_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")


def service_urls() -> dict[str, str]:
    """The real services, from GATEHOUSE_TEST_* or else from `scripts/services start` (which
    installs and starts whatever is missing, and prints the exports)."""
    found = {n: os.environ.get(f"GATEHOUSE_TEST_{n}", "") for n in SERVICES}
    if all(found.values()):
        return found
    out = subprocess.run(
        [str(ROOT / "scripts" / "services"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("export GATEHOUSE_TEST_"):
            name, _, value = line.removeprefix("export GATEHOUSE_TEST_").partition("=")
            found[name] = value
    missing = [n for n, v in found.items() if not v]
    if missing:
        raise SystemExit(f"scripts/services start did not give {missing}")
    return found


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        model = next((ln.split(":", 1)[1].strip() for ln in info if "model name" in ln), "")
    with open("/proc/meminfo") as info:
        mem_kb = int(next(ln.split()[1] for ln in info if ln.startswith("MemTotal")))
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@dataclass
class Bench:
    """A running set of gatehouse processes and the SMTP sink their courier mails to."""

    stack: Stack
    sink: MailSink
    database_url: str
    redis_url: str
    kafka: str

    def start(
        self, name: str, command: str, *, port: int | None = None, env: dict[str, str] | None = None
    ) -> Role:
        saved = dict(self.stack.env)
        self.stack.env.update(env or {})
        try:
            return self.stack.start(name, command, port)
        finally:
            self.stack.env.clear()
            self.stack.env.update(saved)

    def api(self, workers: int = 1, env: dict[str, str] | None = None) -> Role:
        role = self.start(
            "api",
            "api",
            port=free_port(),
            env={"GATEHOUSE_API_WORKERS": str(workers), **(env or {})},
        )
        self.stack.wait_ready()
        return role

    def stop(self, name: str) -> None:
        stop_process(self.stack.roles.pop(name).popen)


@contextlib.contextmanager
def bench_stack(extra_env: dict[str, str] | None = None) -> Iterator[Bench]:
    """A PostgreSQL database, a Redis database and a courier group of its own, migrated; rate
    limits off (one load generator address drives every client) and logs at WARNING."""
    from aiosmtpd.controller import Controller

    urls = service_urls()
    admin = urls["POSTGRES_URL"]
    psql = admin.replace("postgresql+asyncpg", "postgresql")
    database = f"bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", psql, "-qc", f"CREATE DATABASE {database}"], check=True)
    database_url = admin.rsplit("/", 1)[0] + "/" + database
    sink = MailSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        with own_redis_db(urls["REDIS_URL"]) as redis_url, tempfile.TemporaryDirectory() as tmp:
            stack = Stack.configure(
                Path(tmp), database_url, redis_url, urls["KAFKA_BOOTSTRAP_SERVERS"], sink.url
            )
            stack.env.update(
                {
                    # As deployed: migrated beforehand (below), never at start-up.
                    "GATEHOUSE_ENV": "production",
                    "GATEHOUSE_RATE_LIMITS": "{}",
                    "GATEHOUSE_LOG_LEVEL": "WARNING",
                    **(extra_env or {}),
                }
            )
            subprocess.run(
                [sys.executable, "-m", "gatehouse", "migrate"],
                env={**os.environ, **stack.env},
                check=True,
                capture_output=True,
            )
            bench = Bench(stack, sink, database_url, redis_url, urls["KAFKA_BOOTSTRAP_SERVERS"])
            try:
                yield bench
            finally:
                stack.stop()
    finally:
        controller.stop()
        subprocess.run(["psql", psql, "-qc", f"DROP DATABASE IF EXISTS {database}"], check=False)


def rss_mb(pid: int, tree: bool = True) -> float:
    """Resident memory of a process (and, with `tree`, of its children: api workers)."""
    total = 0
    for p in [pid, *(children(pid) if tree else [])]:
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as status:
            total += next(int(ln.split()[1]) for ln in status if ln.startswith("VmRSS"))
    return round(total / 1024, 1)


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User plus system CPU time a process (and its children) has used: CPU per request is a
    steadier figure than requests a second on a machine shared with the load generator."""
    ticks = 0
    for p in [pid, *(children(pid) if tree else [])]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_process(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not drained in 30 s."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


WRK_DONE = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    '\\nWRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run with the Lua script `benchmarks/lua/<script>.lua`; its figures as a dict with
    `per_s` (completed requests a second, answers that were not 2xx excluded)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write((LUA / f"{script}.lua").read_text() + WRK_DONE)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                lua.name,
                url,
            ],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        ).stdout
    finally:
        os.unlink(lua.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    figures: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    good = figures["requests"] - figures["non2xx"] - figures["errors"]
    figures["per_s"] = round(good / (figures["duration_us"] / 1e6), 1)
    figures["p50_ms"] = round(figures.pop("p50_us") / 1000, 2)
    figures["p99_ms"] = round(figures.pop("p99_us") / 1000, 2)
    return figures


def median(values: Sequence[float], digits: int = 2) -> float:
    return round(float(statistics.median(values)), digits)


def percentile(samples: Sequence[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of raw samples."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live children, and the children it has reaped (the root's
    cutime and cstime): PostgreSQL's backends end when a client's pool closes a connection, and
    without those a run's reading could even go down."""
    spent = cpu_seconds(pid)
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        spent += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return spent


def settle(pids: list[int], quiet: float = 0.15, timeout: float = 30.0) -> float:
    """Waits until a server has finished what the last wrk run left in flight, and returns the
    seconds it waited. wrk stops with a request open on each connection, and a server goes on
    hashing the password of a login whose client has gone: 32 of them at Keycloak's 10 logins a
    second would take the first 3 s of whatever runs next (a run of 3 s once counted none).
    Done when the server's trees used less than `quiet` of a core over half a second."""
    started = time.monotonic()
    spent, at = sum(tree_cpu_seconds(p) for p in pids), started
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now_spent, now = sum(tree_cpu_seconds(p) for p in pids), time.monotonic()
        # Below zero is a process gone (a role restarted): not a quiet stack.
        if 0 <= (now_spent - spent) / (now - at) < quiet:
            break
        spent, at = now_spent, now
    return round(time.monotonic() - started, 2)


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)
