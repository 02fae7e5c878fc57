"""hash_per_s: how many argon2id hashes (m=19 MiB, t=2, p=1) per second this machine does through
Gatehouse's hasher with one worker per core: the ceiling for logins."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

from gatehouse.security.hashing import Argon2Hasher

RESULTS = Path(__file__).parent / "results" / "hash_rate.json"


async def one_run(hasher: Argon2Hasher, count: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(hasher.hash(f"password-{i}") for i in range(count)))
    return count / (time.perf_counter() - start)


async def main() -> None:
    cores = os.cpu_count() or 1
    hasher = Argon2Hasher(memory_kib=19 * 1024, time_cost=2, parallelism=1, workers=cores)
    await one_run(hasher, cores * 4)  # warm-up: thread pool, allocator
    rates = [await one_run(hasher, cores * 40) for _ in range(5)]
    hasher.close()
    result = {
        "hash_per_s": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
        "cores": cores,
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
