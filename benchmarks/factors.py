"""Issue 13's two new sign-ins against the real stack: password + TOTP (`POST /api/auth/login`,
then `POST /api/auth/login/mfa {mfa_token, code}`) and passwordless passkey (`POST
/api/auth/passkeys/login/options {}`, then `.../login/verify`), beside the plain password login
and the refresh rotation measured in the same run, on the same stack.

A sign-in is two requests whose second depends on the first answer (a token, a challenge to
sign), which wrk cannot do: this process drives them with an asyncio client of bounded
concurrency over kept-alive HTTP/1.1 connections (a minimal client: httpx spends more CPU a
request than the api's cheap routes do). The driver shares the machine with the api, so its
CPU a sign-in is measured and reported, and refresh is measured with the same driver as well
as with wrk: `passkey_signin_per_s` is compared with `refresh_per_s_same_driver`.

Accounts are enrolled over HTTP as a user would (login, then `/api/auth/mfa/totp` and
`/confirm`, or `/api/auth/passkeys/register/options` and `/verify`), one soft authenticator
(tests/softauthn.py) per passkey account, never used by two sign-ins at once (its counter must
go forward). A TOTP code is accepted once per account and 30-second step: an account is
confirmed with the previous step's code, so the current and the next step's codes are both
left, and it gets one more with each step that passes; about one account is seeded per two
sign-ins the runs may make.

    .venv/bin/python benchmarks/factors.py [--runs 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyotp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import routes
import seed
from tests.softauthn import SoftAuthenticator

from gatehouse.domain.factors import Passkey
from gatehouse.security.hashing import Argon2Hasher
from gatehouse.selfservice.context import RelyingParty
from gatehouse.selfservice.passkeys import ceremony

STEP = 30  # seconds of a TOTP time step
TOTP_CLIENTS = 8  # argon2-bound, as the login run's 8 wrk connections
CHEAP_CLIENTS = routes.CONNECTIONS  # passkey and refresh: 32, as wrk on the cheap routes
PASSKEY_ACCOUNTS = 4 * CHEAP_CLIENTS
WARM_UP_SECONDS = 2.0
USER_AGENT = "gatehouse-bench/1"  # the same at enrolment and sign-in: no new-device notices
Step = Callable[["Connection"], Awaitable[bool]]


class Connection:
    """One kept-alive HTTP/1.1 connection (a client of the driver holds one, as a wrk
    connection does): JSON in, status and JSON out."""

    def __init__(self, base: str):
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body, separators=(",", ":")).encode()
        request = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), USER_AGENT.encode(), len(payload), payload)
        )
        for attempt in range(2):
            if self.writer is None:
                await self.open()
            assert self.reader is not None
            assert self.writer is not None
            try:
                self.writer.write(request)
                first = await self.reader.readline()
            except ConnectionError:
                first = b""
            if first:
                break
            self.close()  # the server closed a kept connection: once more on a new one
            if attempt:
                raise ConnectionError("no answer")
        status = int(first.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"connection" and b"close" in value.lower():
                close = True
        raw = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, json.loads(raw) if raw else {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- accounts -------------------------------------------------------------------------------


@dataclass
class TotpAccount:
    email: str
    totp: pyotp.TOTP
    last_step: int  # the newest step accepted: only newer ones are accepted again

    def next_step(self) -> int | None:
        """The oldest step newer than the last accepted, among the current one and the next
        (the server takes one step of drift either way; the previous step is not offered, as
        it could fall out of the window between here and the server)."""
        now = int(time.time() // STEP)
        return next((s for s in (now, now + 1) if s > self.last_step), None)


@dataclass
class TotpPool:
    """Accounts with a code left now, and the others by the step from which they have one."""

    ready: deque[TotpAccount]
    resting: list[tuple[int, int, TotpAccount]] = field(default_factory=list)
    starved: int = 0  # times a client found no account with a code left, and waited

    def put(self, account: TotpAccount) -> None:
        if account.next_step() is None:
            # Usable again once the current step reaches its last accepted one.
            heapq.heappush(self.resting, (account.last_step, id(account), account))
        else:
            self.ready.append(account)

    async def take(self) -> tuple[TotpAccount, str]:
        while True:
            now = int(time.time() // STEP)
            while self.resting and self.resting[0][0] <= now:
                self.ready.append(heapq.heappop(self.resting)[2])
            if self.ready:
                account = self.ready.popleft()
                step = account.next_step()
                if step is not None:
                    account.last_step = step  # spent whether or not the sign-in succeeds
                    return account, account.totp.generate_otp(step)
                self.put(account)
                continue
            self.starved += 1
            await asyncio.sleep(0.05)


async def enrol(url: str, emails: list[str], one: Callable[..., Awaitable[Any]]) -> list[Any]:
    """Each email signed in with its password and enrolled by `one(client, email, auth)`, 8 at
    a time (each sign-in is an argon2id hash on the server)."""
    gate = asyncio.Semaphore(8)
    headers = {"User-Agent": USER_AGENT}

    async def each(client: httpx.AsyncClient, email: str) -> Any:
        async with gate:
            reply = await client.post("/api/auth/login", json=seed.login_body(email))
            reply.raise_for_status()
            auth = {"Authorization": f"Bearer {reply.json()['data']['token']}"}
            return await one(client, email, auth)

    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:
        return list(await asyncio.gather(*(each(client, e) for e in emails)))


async def enrol_totp(client: httpx.AsyncClient, email: str, auth: dict[str, str]) -> TotpAccount:
    reply = await client.post("/api/auth/mfa/totp", headers=auth)
    reply.raise_for_status()
    totp = pyotp.TOTP(reply.json()["data"]["secret"])
    # The previous step's code: the current and the next one stay unspent.
    step = int(time.time() // STEP) - 1
    for attempt in (step, int(time.time() // STEP)):
        reply = await client.post(
            "/api/auth/mfa/totp/confirm", json={"code": totp.generate_otp(attempt)}, headers=auth
        )
        if reply.status_code == 200:
            return TotpAccount(email, totp, attempt)
    raise RuntimeError(f"TOTP confirm refused: {reply.text}")


async def enrol_passkey(
    client: httpx.AsyncClient, _email: str, auth: dict[str, str]
) -> SoftAuthenticator:
    device = SoftAuthenticator()  # origin http://localhost:8000: the default relying party
    reply = await client.post("/api/auth/passkeys/register/options", headers=auth)
    reply.raise_for_status()
    started = reply.json()["data"]
    body = {"flow_id": started["flow_id"], "credential": device.create(started["options"])}
    reply = await client.post("/api/auth/passkeys/register/verify", json=body, headers=auth)
    reply.raise_for_status()
    return device


# --- the sign-ins, one step of a driver's client each ----------------------------------------


@dataclass
class Errors:
    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, what: str, status: int, body: dict[str, Any]) -> bool:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(f"{what}: {status} {json.dumps(body)[:300]}")
        return False


def totp_signin(pool: TotpPool, errors: Errors) -> Step:
    async def step(conn: Connection) -> bool:
        account, code = await pool.take()
        try:
            status, body = await conn.post("/api/auth/login", seed.login_body(account.email))
            if status != 200 or not body["data"].get("mfa_token"):
                return errors.add("login", status, body)
            finish = {"mfa_token": body["data"]["mfa_token"], "code": code}
            status, body = await conn.post("/api/auth/login/mfa", finish)
            if status != 200 or not body["data"].get("token"):
                return errors.add("login/mfa", status, body)
            return True
        finally:
            pool.put(account)

    return step


def passkey_signin(devices: deque[SoftAuthenticator], errors: Errors) -> Step:
    async def step(conn: Connection) -> bool:
        device = devices.popleft()  # never two sign-ins with one credential at once
        try:
            status, body = await conn.post("/api/auth/passkeys/login/options", {})
            if status != 200:
                return errors.add("options", status, body)
            started = body["data"]
            answer = {"flow_id": started["flow_id"], "credential": device.get(started["options"])}
            status, body = await conn.post("/api/auth/passkeys/login/verify", answer)
            if status != 200 or not body["data"].get("token"):
                return errors.add("verify", status, body)
            return True
        finally:
            devices.append(device)

    return step


def refresh(tokens: list[str], errors: Errors) -> Step:
    async def step(conn: Connection) -> bool:
        if not tokens:  # every live token was lost to errors
            raise RuntimeError(f"refresh: no live token left; {errors.first}")
        status, body = await conn.post("/api/auth/refresh", {"refresh_token": tokens.pop()})
        if status != 200:
            return errors.add("refresh", status, body)
        tokens.insert(0, body["data"]["refresh_token"])
        return True

    return step


# --- measuring ------------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every process, ours and others')."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def service_pids() -> dict[str, int]:
    """PostgreSQL's postmaster (its backends are its children), Redis and Kafka, from the pid
    files `scripts/services` keeps; a service not found is left out of the readings (and its
    CPU counts as other work)."""
    state = Path(
        os.environ.get("GATEHOUSE_SERVICES_DIR", Path.home() / ".local/state/gatehouse-services")
    )
    files = {
        "postgres": state / "postgres" / "data" / "postmaster.pid",
        "redis": state / "redis" / "redis.pid",
        "kafka": state / "kafka" / "kafka.pid",
    }
    found: dict[str, int] = {}
    for name, path in files.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(path.read_text().split()[0])
            if Path(f"/proc/{pid}").exists():
                found[name] = pid
    return found


@dataclass
class Meters:
    """CPU seconds of the api (supervisor and workers), the relay and courier, PostgreSQL,
    Redis and Kafka, this driver and the whole machine, read at the start and at the end of a
    measured run; `other` is what the machine spent besides (other work on it)."""

    pids: dict[str, list[int]]
    start: dict[str, float] = field(default_factory=dict)

    def read(self) -> dict[str, float]:
        spent = {k: sum(harness.cpu_seconds(p) for p in v) for k, v in self.pids.items()}
        return {
            "wall": time.perf_counter(),
            **spent,
            "driver": time.process_time(),
            "machine": machine_busy(),
        }

    def begin(self) -> None:
        self.start = self.read()

    def end(self, count: int) -> dict[str, float]:
        """Cores each kept busy over the run, and CPU milliseconds a completed operation."""
        end = self.read()
        spent = {k: end[k] - self.start[k] for k in end}
        wall, count = spent.pop("wall"), max(1, count)
        spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
        out: dict[str, float] = {}
        for key, seconds in spent.items():
            out[f"{key}_cores"] = round(seconds / wall, 2)
            out[f"{key}_cpu_ms"] = round(seconds * 1000 / count, 3)
        return out


async def drive(
    url: str, clients: int, seconds: float, step: Step, meters: Meters
) -> dict[str, Any]:
    """Closed loop: `clients` coroutines, a connection each, each repeating `step` until the
    deadline. Operations a second are those completed before the deadline over `seconds`;
    latency percentiles are over those; the CPU figures are a completed operation's, the ones
    finishing after the deadline included (their CPU is in the readings)."""
    connections = [Connection(url) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies: list[float] = []
    total = 0
    meters.begin()
    start = time.perf_counter()
    deadline = start + seconds

    async def client(conn: Connection) -> None:
        nonlocal total
        while (began := time.perf_counter()) < deadline:
            if await step(conn):
                total += 1
                ended = time.perf_counter()
                if ended <= deadline:
                    latencies.append((ended - began) * 1000)

    await asyncio.gather(*(client(c) for c in connections))
    costs = meters.end(total)
    for conn in connections:
        conn.close()
    return {
        "per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(harness.percentile(latencies, 50), 2) if latencies else 0.0,
        "p99_ms": round(harness.percentile(latencies, 99), 2) if latencies else 0.0,
        "completed": total,
        **costs,
    }


def wrk_run(
    url: str, script: str, connections: int, env: dict[str, str], meters: Meters, seconds: float
) -> dict[str, Any]:
    """One wrk run, with the same CPU readings as the driver's runs."""
    meters.begin()
    result = harness.wrk(url, script, seconds=seconds, connections=connections, env=env)
    return {**result, **meters.end(int(result["requests"]))}


def argon2_cpu_ms(samples: int = 5) -> float:
    """CPU milliseconds of one argon2id hash with Gatehouse's parameters (19 MiB, t=2, p=1)."""
    hasher = Argon2Hasher(memory_kib=19 * 1024, time_cost=2, parallelism=1, workers=1)

    async def hashes() -> None:
        for i in range(samples):
            await hasher.hash(f"password-{i}")

    try:
        asyncio.run(hashes())  # warm-up
        began = time.process_time()
        asyncio.run(hashes())
        return round((time.process_time() - began) * 1000 / samples, 2)
    finally:
        hasher.close()


def ceremony_ms(samples: int = 300) -> tuple[float, float]:
    """CPU milliseconds, in this process, of Gatehouse's sign-in options (py_webauthn's, as
    JSON) and of its assertion check (py_webauthn: parsing, client data, relying party hash,
    flags, counter, the ES256 signature)."""
    rp = RelyingParty()
    device = SoftAuthenticator()
    challenge = os.urandom(32)
    created = ceremony.creation_options(
        rp,
        challenge=challenge,
        user_id=str(uuid.uuid4()),
        user_name="b",
        display_name="B",
        existing=[],
    )
    new = ceremony.verify_creation(rp, device.create(created), challenge=challenge)
    passkey = Passkey(
        id="p",
        user_id="u",
        credential_id=new.credential_id,
        public_key=new.public_key,
        sign_count=0,
        name="bench",
        created_at=datetime.now(UTC),
    )
    began = time.process_time()
    for _ in range(samples):
        options = ceremony.request_options(rp, challenge=challenge, allowed=None)
    options_ms = (time.process_time() - began) * 1000 / samples
    answers = [device.get(options) for _ in range(samples)]
    began = time.process_time()
    for answer in answers:
        ceremony.verify_assertion(rp, answer, challenge=challenge, passkey=passkey)
    verify_ms = (time.process_time() - began) * 1000 / samples
    return round(options_ms, 3), round(verify_ms, 3)


# --- what limits each figure ----------------------------------------------------------------


PARTS = {
    "api": "the api",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "kafka": "Kafka",
    "helpers": "relay+courier",
    "driver": "the driver",
}


def cores_text(run: dict[str, Any], cores: int) -> str:
    parts = [f"{n} {run[k + '_cores']:.2f}" for k, n in PARTS.items() if k + "_cores" in run]
    parts.append(f"other work {run['other_cores']:.2f}")
    return f"{run['machine_cores']:.2f} of {cores} cores busy ({', '.join(parts)})"


def cost_text(run: dict[str, Any], what: str) -> str:
    """CPU milliseconds an operation, each process group's, heaviest first."""
    found = {n: run[k + "_cpu_ms"] for k, n in PARTS.items() if k + "_cpu_ms" in run}
    ordered = sorted(found.items(), key=lambda kv: -kv[1])
    return f"CPU a {what}: " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in ordered)


def bound_by(run: dict[str, Any], cores: int, clients: int) -> str:
    """Which resource ran out during a run."""
    if run["driver_cores"] >= 0.9:
        return "the driver (one Python thread, a core busy)"
    if run["machine_cores"] >= 0.9 * cores:
        return "CPU, every core busy"
    return f"waits, not CPU (round trips at {clients} clients)"


def limits(fig: dict[str, Any], runs: dict[str, dict[str, Any]], cores: int) -> dict[str, str]:
    """One line each on what bounded the two sign-ins, from the readings of one run."""
    totp, passkey, ref = runs["totp"], runs["passkey"], runs["refresh_driver"]
    login = runs["login"]
    argon2_share = fig["argon2_cpu_ms"] / max(totp["api_cpu_ms"], 1e-9)
    head = "the api's CPU"
    if argon2_share >= 0.5:
        head = (
            f"argon2id of the password step ({fig['argon2_cpu_ms']} ms CPU a hash: "
            f"{argon2_share:.0%} of the api's CPU a sign-in)"
        )
    totp_text = (
        f"{head}; {fig['totp_to_login_ratio']:.0%} of the plain login rate, the TOTP step "
        f"adding {totp['api_cpu_ms'] - login['api_cpu_ms']:.1f} ms of api CPU to a login's "
        f"{login['api_cpu_ms']:.1f} ms; {bound_by(totp, cores, TOTP_CLIENTS)}: "
        f"{cores_text(totp, cores)}; {cost_text(totp, 'sign-in')}"
    )
    heaviest = max(
        (k for k in PARTS if k + "_cpu_ms" in passkey), key=lambda k: passkey[k + "_cpu_ms"]
    )
    passkey_text = (
        f"{bound_by(passkey, cores, CHEAP_CLIENTS)}, mostly {PARTS[heaviest]}'s: "
        f"{fig['passkey_to_refresh_ratio']:.2f} of the refresh rate (same driver) as a sign-in "
        f"is two requests (api {passkey['api_cpu_ms'] / 2:.2f} ms CPU a request, a refresh "
        f"{ref['api_cpu_ms']:.2f} ms) with the Redis flow put and spend, the passkey read and "
        "the write transaction (counter, session, outbox); py_webauthn's part is small "
        f"(options {fig['passkey_options_ms']} ms, the ES256 assertion check "
        f"{fig['es256_verify_ms']} ms); {cost_text(passkey, 'sign-in')} "
        f"({cost_text(ref, 'refresh')}); {cores_text(passkey, cores)}"
    )
    return {"totp_limited_by": totp_text, "passkey_limited_by": passkey_text}


# --- the benchmark --------------------------------------------------------------------------


def run(
    bench: harness.Bench, runs: int = 3, seconds: float = 10, workers: int = 0
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    workers = workers or cores
    bench.start("relay", "relay")
    bench.start("courier", "courier")
    api = bench.api(workers=workers)
    helpers = [bench.stack.roles[n].popen.pid for n in ("relay", "courier")]
    services = {k: [v] for k, v in service_pids().items()}
    meters = Meters({"api": [api.popen.pid], "helpers": helpers, **services})
    env = bench.stack.env
    prefix = f"f{uuid.uuid4().hex[:6]}"
    plain = asyncio.run(seed.users(env, 64, f"{prefix}p"))
    login_env = {"BENCH_EMAILS": ",".join(plain[:16]), "BENCH_PASSWORD": seed.PASSWORD}

    # The machine before any load: other work on it shows here.
    meters.begin()
    time.sleep(2)
    idle = meters.end(1)
    # Warm-up (not counted) of the login route, whose rate sizes the TOTP accounts: each
    # gives two codes now and one more a step, and password + TOTP costs at least a login.
    warm = harness.wrk(api.url, "login", seconds=3, connections=8, env=login_env)
    wanted = float(warm["per_s"]) * 1.5 * (runs * seconds + WARM_UP_SECONDS)
    totp_count = math.ceil(wanted / 2) + 2 * TOTP_CLIENTS
    began = time.monotonic()
    emails = asyncio.run(seed.users(env, totp_count + PASSKEY_ACCOUNTS, f"{prefix}f"))
    pool = TotpPool(deque(asyncio.run(enrol(api.url, emails[:totp_count], enrol_totp))))
    devices = deque(asyncio.run(enrol(api.url, emails[totp_count:], enrol_passkey)))
    enrol_seconds = round(time.monotonic() - began, 1)
    print(
        f"   enrolled {totp_count} TOTP and {len(devices)} passkey accounts in {enrol_seconds} s",
        flush=True,
    )
    argon2_ms, (options_ms, es256_ms) = argon2_cpu_ms(), ceremony_ms()
    errors = {k: Errors() for k in ("totp", "passkey", "refresh")}

    def totp_run(s: float) -> dict[str, Any]:
        step = totp_signin(pool, errors["totp"])
        return asyncio.run(drive(api.url, TOTP_CLIENTS, s, step, meters))

    def passkey_run(s: float) -> dict[str, Any]:
        step = passkey_signin(devices, errors["passkey"])
        return asyncio.run(drive(api.url, CHEAP_CLIENTS, s, step, meters))

    def refresh_run(s: float) -> dict[str, Any]:
        _access, tokens = routes.sessions(api.url, plain)  # fresh chains: 64 live tokens
        return asyncio.run(
            drive(api.url, CHEAP_CLIENTS, s, refresh(tokens, errors["refresh"]), meters)
        )

    for warm_up in (totp_run, passkey_run, refresh_run):
        warm_up(WARM_UP_SECONDS)
    for each in errors.values():  # the runs' errors are reported; the warm-up's are not
        each.count, each.first = 0, []
    per_run: list[dict[str, dict[str, Any]]] = []
    for _ in range(runs):
        measured = {"login": wrk_run(api.url, "login", 8, login_env, meters, seconds)}
        measured["totp"] = totp_run(seconds)
        measured["passkey"] = passkey_run(seconds)
        measured["refresh_driver"] = refresh_run(seconds)
        _access, tokens = routes.sessions(api.url, plain)
        refresh_env = {"BENCH_REFRESH": ",".join(tokens), "BENCH_THREADS": "1"}
        measured["refresh_wrk"] = wrk_run(
            api.url, "refresh", CHEAP_CLIENTS, refresh_env, meters, seconds
        )
        per_run.append(measured)
        print(
            "   run: "
            + ", ".join(f"{k} {v['per_s']}/s" for k, v in measured.items())
            + f"; driver {measured['passkey']['driver_cores']} cores at passkeys",
            flush=True,
        )
    bench.stop("api")

    def med(kind: str, key: str, digits: int = 2) -> float:
        return harness.median([float(r[kind][key]) for r in per_run], digits)

    fig: dict[str, Any] = {
        "totp_signin_per_s": med("totp", "per_s", 1),
        "totp_signin_p50_ms": med("totp", "p50_ms"),
        "totp_signin_p99_ms": med("totp", "p99_ms"),
        "passkey_signin_per_s": med("passkey", "per_s", 1),
        "passkey_signin_p50_ms": med("passkey", "p50_ms"),
        "passkey_signin_p99_ms": med("passkey", "p99_ms"),
        "refresh_per_s_same_driver": med("refresh_driver", "per_s", 1),
        "refresh_same_driver_p50_ms": med("refresh_driver", "p50_ms"),
        "refresh_same_driver_p99_ms": med("refresh_driver", "p99_ms"),
        "refresh_per_s_wrk_same_stack": med("refresh_wrk", "per_s", 1),
        "login_per_s_same_stack": med("login", "per_s", 1),
        "passkey_to_refresh_ratio": harness.median(
            [r["passkey"]["per_s"] / max(r["refresh_driver"]["per_s"], 1e-9) for r in per_run], 3
        ),
        "passkey_to_refresh_api_cpu_ratio": harness.median(
            [
                r["passkey"]["api_cpu_ms"] / max(r["refresh_driver"]["api_cpu_ms"], 1e-9)
                for r in per_run
            ],
            2,
        ),
        "totp_to_login_ratio": harness.median(
            [r["totp"]["per_s"] / max(r["login"]["per_s"], 1e-9) for r in per_run], 3
        ),
        "api_cpu_ms_per_totp_signin": med("totp", "api_cpu_ms"),
        "api_cpu_ms_per_passkey_signin": med("passkey", "api_cpu_ms"),
        "api_cpu_ms_per_refresh": med("refresh_driver", "api_cpu_ms"),
        "api_cpu_ms_per_login": med("login", "api_cpu_ms"),
        "driver_cpu_ms_per_totp_signin": med("totp", "driver_cpu_ms", 3),
        "driver_cpu_ms_per_passkey_signin": med("passkey", "driver_cpu_ms", 3),
        "driver_cpu_ms_per_refresh": med("refresh_driver", "driver_cpu_ms", 3),
        "driver_cores_passkey": med("passkey", "driver_cores"),
        "other_work_cores_passkey": med("passkey", "other_cores"),
        "argon2_cpu_ms": argon2_ms,
        "es256_verify_ms": es256_ms,
        "passkey_options_ms": options_ms,
    }
    for kind, label in (("totp", "totp_signin"), ("passkey", "passkey_signin")):
        for part in ("postgres", "redis"):
            if f"{part}_cpu_ms" in per_run[0][kind]:
                fig[f"{part}_cpu_ms_per_{label}"] = med(kind, f"{part}_cpu_ms")
    for part in ("postgres", "redis"):
        if f"{part}_cpu_ms" in per_run[0]["refresh_driver"]:
            fig[f"{part}_cpu_ms_per_refresh"] = med("refresh_driver", f"{part}_cpu_ms")
    middle = sorted(per_run, key=lambda r: r["passkey"]["per_s"])[len(per_run) // 2]
    fig.update(limits(fig, middle, cores))
    fig["factors_runs"] = per_run
    fig["factors_method"] = {
        "api_workers": workers,
        "seconds_per_run": seconds,
        "runs": runs,
        "driver_clients": {
            "totp": TOTP_CLIENTS,
            "passkey": CHEAP_CLIENTS,
            "refresh": CHEAP_CLIENTS,
        },
        "wrk_connections": {"login": 8, "refresh": CHEAP_CLIENTS},
        "accounts": {"totp": totp_count, "passkey": PASSKEY_ACCOUNTS, "plain": len(plain)},
        "enrol_seconds": enrol_seconds,
        "idle_cores_busy": {k[:-6]: v for k, v in idle.items() if k.endswith("_cores")},
        "totp_waits_for_a_code": pool.starved,
        "errors": {k: v.count for k, v in errors.items()},
        "first_errors": {k: v.first for k, v in errors.items() if v.first},
    }
    return fig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    with harness.bench_stack() as bench:
        result = run(bench, args.runs, args.seconds, args.workers)
    harness.write_result("factors", {**result, "machine": harness.machine()})
    for key, value in result.items():
        if not isinstance(value, dict | list):
            print(f"{key}: {value}")
    print(f"factors_method: {json.dumps(result['factors_method'])}")


if __name__ == "__main__":
    main()
