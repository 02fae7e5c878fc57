"""What the peers and ceiling groups share: one wrk setting for every server and route, and the
CPU each process tree spent on the requests of a run."""

from __future__ import annotations

import time
from typing import Any

import factors
import harness

THREADS = 2  # wrk threads
CONNECTIONS = 32  # wrk connections, every route and server alike


class Meters:
    """CPU seconds of each named set of process trees and of the whole machine, read before and
    after a run; `other` is what the machine spent besides (wrk, and other work on the host)."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids
        self.start = self.read()

    def read(self) -> dict[str, float]:
        spent = {k: sum(harness.tree_cpu_seconds(p) for p in v) for k, v in self.pids.items()}
        return {"wall": time.perf_counter(), **spent, "machine": factors.machine_busy()}

    def end(self, count: int) -> dict[str, float]:
        """Cores each kept busy over the run, and CPU milliseconds a completed request."""
        end = self.read()
        spent = {k: end[k] - self.start[k] for k in end}
        wall, count = spent.pop("wall"), max(1, count)
        spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
        out: dict[str, float] = {}
        for key, seconds in spent.items():
            out[f"{key}_cores"] = round(seconds / wall, 2)
            out[f"{key}_cpu_ms"] = round(seconds * 1000 / count, 3)
        return out


def measure(
    url: str, script: str, env: dict[str, str], seconds: float, pids: dict[str, list[int]]
) -> dict[str, Any]:
    """One wrk run (THREADS, CONNECTIONS) with `benchmarks/lua/<script>.lua`, and the CPU that
    each of `pids` (the server, PostgreSQL) spent a completed request over it. A run that
    completed nothing is an error, not a rate of 0."""
    meters = Meters(pids)
    result = harness.wrk(
        url, script, seconds=seconds, connections=CONNECTIONS, threads=THREADS, env=env
    )
    good = int(result["requests"]) - int(result["non2xx"]) - int(result["errors"])
    result.update(meters.end(good))
    if good <= 0:
        raise RuntimeError(f"{script} on {url}: no request succeeded ({result})")
    return result
