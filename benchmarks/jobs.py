"""Job benchmarks (issue 6): jobs a second through the BullMQ workers, Python against Node, and the
latency from a job's submission to its result at a Socket.IO client.

- `job_read_user_per_s`: `read-user` jobs (a valid access token each, the job options Gatehouse's
  own producer gives) drained by `python -m gatehouse worker` (every queue, as deployed) on
  PostgreSQL and Redis.
- `job_noop_per_s_python` / `job_noop_per_s_node`: the same no-op jobs on the same Redis, drained
  by Gatehouse's worker machinery (`worker_role` over `BullmqWorkers`, what `gatehouse worker`
  runs, with a handler that answers at once) and by npm bullmq's own `Worker`
  (benchmarks/node/noop_worker.mjs), at the same concurrency (`GATEHOUSE_WORKER_CONCURRENCY`),
  their runs alternating so that both see the same machine.
- `job_to_socket_p99_ms`: read-user jobs offered at 500 a second by a Node process (npm bullmq
  `Queue.add` straight to Redis, not the HTTP door), open loop: each job is due at its own time
  and its latency counts from then, so a stall delays every job due during it. Each names the
  sid of one of the process's socket.io-client connections (websocket) to `gatehouse api`;
  the latency ends when its `notification` arrives there. The first second is not counted.

A throughput run pauses the queue, fills it with N jobs (python bullmq `addBulk` from this process:
neither worker), resumes it and waits until all N are completed. The rate is read from the times
BullMQ records as each job completes (the `completed` set's scores), first to last, so no
worker's start-up counts. Every figure is the median of `runs` runs after a warm-up run; CPU
time (user + system) a job of each worker process is reported beside it, and each run records
the machine's CPU pressure (the share of time something waited for a CPU: other work on the
same cores, which stretches latencies).

    eval "$(scripts/services start | grep '^export ')"
    .venv/bin/python benchmarks/jobs.py [--runs 3] [--only noop|read-user|socket]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import seed
from tests.e2e.stack import node_modules  # npm bullmq and socket.io-client, installed if missing

from gatehouse.jobs.bullmq_queues import job_options
from gatehouse.selfservice.login import flow as login_flow

NODE = harness.ROOT / "benchmarks" / "node"
NOOP_RESULT = {"success": True, "message": "noop", "data": {}}
NOOP_JOBS = 10_000  # a run
READ_USER_JOBS = 6_000  # a run
WARMUP_JOBS = 2_000
SOCKET_RATE = 500.0  # jobs offered a second
SOCKET_SECONDS = 6.0  # a run, of which the first second is warm-up
SOCKET_WARMUP_SECONDS = 1.0
SOCKET_CLIENTS = 10
USERS = 20  # accounts (tokens) the read-user jobs read
Data = Callable[[int], dict[str, Any]]


def cpu_pressure() -> float | None:
    """The share of the last 10 s in which some runnable task waited for a CPU (Linux PSI):
    how much other work on this machine got in the way of a run."""
    try:
        fields = Path("/proc/pressure/cpu").read_text().split()
    except OSError:
        return None
    return float(fields[1].removeprefix("avg10="))


def settings(env: dict[str, str]) -> Any:
    with seed.settings_of(env) as s:
        return s


def gatehouse_job_options(env: dict[str, str]) -> dict[str, Any]:
    """The options Gatehouse's own producer (`BullmqJobs.submit`) gives every job."""
    s = settings(env)
    return job_options(
        s.job_attempts, s.job_backoff_ms, s.job_retention_seconds, s.job_retention_count
    )


# --- Filling a queue and timing its drain ----------------------------------------------------


class Drain:
    """One queue that this process fills while it is paused, then releases to its workers."""

    def __init__(self, redis_url: str, queue: str, options: dict[str, Any] | None = None):
        from bullmq import Queue
        from redis.asyncio import Redis

        self.name = queue
        self.queue = Queue(queue, {"connection": redis_url, "prefix": "bull"})
        self.redis = Redis.from_url(redis_url)
        self.options = options or {}

    async def run(self, count: int, data: Data, pid: int | None = None) -> dict[str, Any]:
        await self.queue.pause()
        try:
            for start in range(0, count, 500):
                await self.queue.addBulk(
                    [
                        {
                            "name": self.name,
                            "data": data(i),
                            "opts": {**self.options, "jobId": uuid.uuid4().hex},
                        }
                        for i in range(start, min(count, start + 500))
                    ]
                )
            since = int(time.time() * 1000)
            cpu = harness.cpu_seconds(pid, tree=False) if pid else 0.0
        finally:
            await self.queue.resume()
        completed = f"bull:{self.name}:completed"
        deadline = time.monotonic() + max(60, count / 100)
        while (done := await self.redis.zcount(completed, since, "+inf")) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {done} of {count} jobs completed")
            await asyncio.sleep(0.05)
        cpu = harness.cpu_seconds(pid, tree=False) - cpu if pid else 0.0
        finished = await self.redis.zrangebyscore(completed, since, "+inf", withscores=True)
        times = sorted(score for _member, score in finished)
        seconds = (times[-1] - times[0]) / 1000
        sample = [m.decode() for m, _ in finished[:: max(1, len(finished) // 20)]]
        results = [
            json.loads(await self.redis.hget(f"bull:{self.name}:{job_id}", "returnvalue"))
            for job_id in sample
        ]
        return {
            "jobs": count,
            "per_s": round((len(times) - 1) / seconds, 1) if seconds > 0 else 0.0,
            "seconds": round(seconds, 3),
            "worker_cpu_us_per_job": round(cpu / count * 1e6, 1) if pid else None,
            "cpu_pressure_pct": cpu_pressure(),
            "sampled_ok": sum(bool(r.get("success")) for r in results),
            "sampled": len(results),
        }

    async def close(self) -> None:
        await self.queue.close()
        await self.redis.aclose()


# --- Processes -------------------------------------------------------------------------------


class Process:
    """A process this benchmark starts, and stops (SIGTERM, then kill)."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.popen = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=harness.ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        harness.stop_process(self.popen)


def python_noop_worker(queue: str) -> None:
    """`benchmarks/jobs.py noop-worker QUEUE`: `gatehouse worker`'s role on one queue with a
    handler that answers at once (a process of its own, started by `noop`)."""
    from gatehouse.config import Settings
    from gatehouse.entrypoints import processes
    from gatehouse.jobs.worker import worker_role
    from gatehouse.observability import logs

    config = Settings()
    logs.configure(config.log_level, config.log_json)

    async def noop(_ctx: Any, _queue: str, _name: str, _data: Any, _id: str) -> dict[str, Any]:
        return NOOP_RESULT

    processes.run(lambda: processes.run_roles(config, [worker_role([queue], noop)]))


# --- The figures -----------------------------------------------------------------------------


def noop(bench: harness.Bench, runs: int = 3, count: int = NOOP_JOBS) -> dict[str, Any]:
    """No-op jobs drained by the Python worker machinery and by Node's bullmq Worker."""
    node_modules()
    env = dict(bench.stack.env)
    concurrency = settings(env).worker_concurrency
    tag = uuid.uuid4().hex[:6]
    queues = {"python": f"noop-python-{tag}", "node": f"noop-node-{tag}"}
    logs = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    workers = {
        "python": Process(
            [sys.executable, __file__, "noop-worker", queues["python"]],
            # No Kafka: the role needs none, and its start-up would create the topics.
            {**env, "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": ""},
            logs / "python-noop.log",
        ),
        "node": Process(
            ["node", str(NODE / "noop_worker.mjs")],
            {
                "REDIS_URL": bench.redis_url,
                "QUEUE": queues["node"],
                "CONCURRENCY": str(concurrency),
            },
            logs / "node-noop.log",
        ),
    }

    def data(i: int) -> dict[str, Any]:
        return {"n": i}

    async def go() -> dict[str, list[dict[str, Any]]]:
        drains = {kind: Drain(bench.redis_url, queue) for kind, queue in queues.items()}
        figures: dict[str, list[dict[str, Any]]] = {kind: [] for kind in queues}
        try:
            for drain in drains.values():
                await drain.run(WARMUP_JOBS, data)  # start-up and warm-up (Node's JIT too)
            order = list(drains)
            for _ in range(runs):
                for kind in order:
                    pid = workers[kind].popen.pid
                    figures[kind].append(await drains[kind].run(count, data, pid))
                order.reverse()  # neither always goes first
        finally:
            for drain in drains.values():
                await drain.close()
        return figures

    try:
        figures = asyncio.run(go())
    finally:
        for worker in workers.values():
            worker.stop()
    return {
        "job_noop_per_s_python": harness.median([f["per_s"] for f in figures["python"]]),
        "job_noop_per_s_node": harness.median([f["per_s"] for f in figures["node"]]),
        "job_noop_cpu_us_per_job_python": harness.median(
            [f["worker_cpu_us_per_job"] for f in figures["python"]]
        ),
        "job_noop_cpu_us_per_job_node": harness.median(
            [f["worker_cpu_us_per_job"] for f in figures["node"]]
        ),
        "job_noop_jobs_per_run": count,
        "job_noop_concurrency": concurrency,
        "job_noop_runs": figures,
    }


async def _tokens(env: dict[str, str], count: int) -> list[str]:
    """Access tokens of `count` new accounts, each signed in once (setup, not measured)."""

    emails = await seed.users(env, count, f"jobs-{uuid.uuid4().hex[:6]}")
    services = seed.services(env)
    try:
        return [
            (await login_flow.login(services.ctx, email=email, password=seed.PASSWORD)).token
            for email in emails
        ]
    finally:
        await services.aclose()


def tokens_for(bench: harness.Bench) -> list[str]:
    return asyncio.run(_tokens(dict(bench.stack.env), USERS))


def read_user(
    bench: harness.Bench,
    runs: int = 3,
    count: int = READ_USER_JOBS,
    tokens: list[str] | None = None,
) -> dict[str, Any]:
    """read-user jobs drained by `python -m gatehouse worker`."""
    env = dict(bench.stack.env)
    tokens = tokens or tokens_for(bench)
    worker = bench.start("jobs-worker", "worker")

    def data(i: int) -> dict[str, Any]:
        return {"token": tokens[i % len(tokens)]}

    async def go() -> list[dict[str, Any]]:
        drain = Drain(bench.redis_url, "read-user", gatehouse_job_options(env))
        try:
            await drain.run(WARMUP_JOBS, data)
            return [await drain.run(count, data, worker.popen.pid) for _ in range(runs)]
        finally:
            await drain.close()

    try:
        figures = asyncio.run(go())
    finally:
        bench.stop("jobs-worker")
    refused = [f for f in figures if f["sampled_ok"] != f["sampled"]]
    if refused:  # the tokens did not work: the figure would not be read-user's
        raise RuntimeError(f"read-user jobs were refused: {refused}")
    return {
        "job_read_user_per_s": harness.median([f["per_s"] for f in figures]),
        "job_read_user_cpu_us_per_job": harness.median(
            [f["worker_cpu_us_per_job"] for f in figures]
        ),
        "job_read_user_jobs_per_run": count,
        "job_read_user_concurrency": settings(env).worker_concurrency,
        "job_read_user_runs": figures,
    }


def socket_run(
    api_url: str,
    redis_url: str,
    tokens: list[str],
    options: dict[str, Any],
    *,
    rate: float = SOCKET_RATE,
    seconds: float = SOCKET_SECONDS,
    warmup: float = SOCKET_WARMUP_SECONDS,
    clients: int = SOCKET_CLIENTS,
) -> dict[str, Any]:
    """One run of benchmarks/node/socket_latency.mjs: its figures."""
    env = {
        "GATEHOUSE_URL": api_url,
        "REDIS_URL": redis_url,
        "RATE": str(rate),
        "SECONDS": str(seconds),
        "WARMUP_SECONDS": str(warmup),
        "CLIENTS": str(clients),
        "JOB_OPTIONS": json.dumps(options),
    }
    out = subprocess.run(
        ["node", str(NODE / "socket_latency.mjs")],
        input=json.dumps(tokens),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"socket_latency.mjs failed:\n{out.stdout}\n{out.stderr}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["cpu_pressure_pct"] = cpu_pressure()
    return figures


def job_to_socket(
    bench: harness.Bench,
    runs: int = 3,
    rate: float = SOCKET_RATE,
    tokens: list[str] | None = None,
) -> dict[str, Any]:
    """read-user jobs offered at `rate` a second: from `Queue.add` to `notification`."""
    node_modules()
    env = dict(bench.stack.env)
    tokens = tokens or tokens_for(bench)
    options = gatehouse_job_options(env)
    api = bench.api(workers=1)  # once it answers /health/ready
    bench.start("jobs-worker", "worker")
    try:
        # Start-up and warm-up (the worker's first jobs, the api's first pushes): not counted.
        socket_run(api.url, bench.redis_url, tokens, options, rate=rate, seconds=2)
        figures = [
            socket_run(api.url, bench.redis_url, tokens, options, rate=rate) for _ in range(runs)
        ]
    finally:
        bench.stop("jobs-worker")
        bench.stop("api")
    return {
        "job_to_socket_p99_ms": harness.median([f["p99_ms"] for f in figures]),
        "job_to_socket_p50_ms": harness.median([f["p50_ms"] for f in figures]),
        "job_to_socket_offered_per_s": rate,
        # Jobs whose notification never came, or whose result was a refusal (both should be 0).
        "job_to_socket_lost": sum(f["measured"] - f["received"] for f in figures),
        "job_to_socket_refused": sum(f["refused"] for f in figures),
        "job_to_socket_submitted_via": "npm bullmq Queue.add (straight to Redis, not HTTP)",
        "job_to_socket_runs": figures,
    }


def run(bench: harness.Bench, runs: int = 3) -> dict[str, Any]:
    """Every job figure of issue 6 (medians over `runs`), for benchmarks/run.py."""
    tokens = tokens_for(bench)
    result: dict[str, Any] = {}
    result.update(noop(bench, runs))
    result.update(read_user(bench, runs, tokens=tokens))
    result.update(job_to_socket(bench, runs, tokens=tokens))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["noop", "read-user", "socket"], help="one of the three")
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("noop-worker", help="(internal) the Python no-op worker process")
    worker.add_argument("queue")
    args = parser.parse_args()
    if args.command == "noop-worker":
        python_noop_worker(args.queue)
        return
    started = time.monotonic()
    with harness.bench_stack() as bench:
        if args.only == "noop":
            result = noop(bench, args.runs)
        elif args.only == "read-user":
            result = read_user(bench, args.runs)
        elif args.only == "socket":
            result = job_to_socket(bench, args.runs)
        else:
            result = run(bench, args.runs)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["runs"] = args.runs
    result["machine"] = harness.machine()
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=2))
    if not args.only:
        print("written to", harness.write_result("jobs", result))


if __name__ == "__main__":
    main()
