"""Gatehouse roles as subprocesses on the real services, for the end-to-end job tests: start them,
wait until each is ready, stop them all (SIGTERM, then kill), and drive the Node interop scripts
(answering their requests for mailed codes on stdin)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from gatehouse.config import DEFAULT_RATE_LIMITS
from gatehouse.domain.crypto import generate_secrets_document
from tests.conftest import MailSink, body_of, courier_group_at_end, free_port, smtp_server, unique
from tests.integration.conftest import create_database, drop_database

INTEROP = Path(__file__).resolve().parents[1] / "interop"
CODE = re.compile(r"code is: (\d{6})")


def node_modules() -> Path:
    """npm bullmq and socket.io-client, installed by tests/interop/install (scripts/test runs it;
    run here too when the link is missing, so a lone pytest works on a fresh clone)."""
    if not (INTEROP / "node_modules" / "bullmq" / "package.json").exists():
        subprocess.run([str(INTEROP / "install")], check=True, timeout=600)
    return INTEROP / "node_modules"


def children(pid: int) -> list[int]:
    """A process's child processes (an api supervisor's workers); none once it is gone."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@contextlib.contextmanager
def own_redis_db(redis_url: str) -> Iterator[str]:
    """The same Redis on a database of its own (1 to 15), leased for the test: queue names are
    fixed, so two runs of the suite on one Redis must not consume each other's jobs. A lease is
    a key in database 0 that expires if a run dies. (Socket.IO pub/sub is server-wide, but
    every push is addressed to a room.) Emptied when leased and again when given back (if the
    lease is still this run's: it lapses after 15 minutes), so no run leaves keys behind."""
    lease = f"gatehouse-test:redis-db-lease:{uuid.uuid4().hex}"
    with redis.Redis.from_url(urlsplit(redis_url)._replace(path="/0").geturl()) as admin:
        deadline = time.monotonic() + 120
        db = 0
        while not db:
            for n in random.sample(range(1, 16), 15):
                if admin.set(f"gatehouse-test:redis-db:{n}", lease, nx=True, ex=900):
                    db = n
                    break
            else:
                assert time.monotonic() < deadline, "no free Redis database for the test"
                time.sleep(0.5)
        url = urlsplit(redis_url)._replace(path=f"/{db}").geturl()
        try:
            with redis.Redis.from_url(url) as own:
                own.flushdb()  # what a dead run may have left behind
            yield url
        finally:
            if admin.get(f"gatehouse-test:redis-db:{db}") == lease.encode():
                with redis.Redis.from_url(url) as own:
                    own.flushdb()
                admin.delete(f"gatehouse-test:redis-db:{db}")


@pytest.fixture(scope="module")
def module_mail_sink() -> Iterator[MailSink]:
    """Like the `mail_sink` fixture, for a module that starts its processes once."""
    with smtp_server(MailSink("127.0.0.1", free_port())) as sink:
        yield sink


async def mailed_code(sink: MailSink, to: str, nth: int) -> str:
    """The code in the `nth` (1-based) message sent to `to`."""
    message = (await sink.wait_for(to, nth))[nth - 1]
    match = CODE.search(body_of(message))
    assert match, body_of(message)
    return match.group(1)


@dataclass
class Role:
    name: str
    command: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    """A set of gatehouse processes sharing one configuration (database, Redis, Kafka, SMTP)."""

    tmp: Path
    env: dict[str, str]
    secrets: dict[str, Any]  # the processes' keys (a test may sign its own tokens)
    roles: dict[str, Role] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)  # what `stop` last returned

    @classmethod
    def configure(
        cls, tmp: Path, database_url: str, redis_url: str, kafka: str, smtp_url: str
    ) -> Stack:
        secrets = tmp / "secrets.json"  # written once, before any process could race for it
        document = generate_secrets_document()
        secrets.write_text(json.dumps(document))
        secrets.chmod(0o600)
        env = {
            "GATEHOUSE_DATABASE_URL": database_url,
            "GATEHOUSE_REDIS_URL": redis_url,
            "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "GATEHOUSE_SMTP_URL": smtp_url,
            "GATEHOUSE_SECRETS_FILE": str(secrets),
            "GATEHOUSE_KAFKA_COURIER_GROUP": unique("e2e-courier"),
            "GATEHOUSE_LOG_LEVEL": "INFO",
            # One journey mails a sign-up code, then a reset code, seconds apart: the default
            # of one code per recipient a minute would refuse the second.
            "GATEHOUSE_RATE_LIMITS": json.dumps(
                {**DEFAULT_RATE_LIMITS, "otp_recipient": "10/minute;50/hour"}
            ),
        }
        if kafka:  # stacks without Kafka run the in-process bus: nothing to skip
            courier_group_at_end(kafka, env["GATEHOUSE_KAFKA_COURIER_GROUP"])
        return cls(tmp, env, document)

    def start(self, name: str, command: str, port: int | None = None) -> Role:
        log = self.tmp / f"{name}.log"
        env = {**os.environ, **self.env}
        if port is not None:
            env["GATEHOUSE_PORT"] = str(port)
        popen = subprocess.Popen(
            [sys.executable, "-m", "gatehouse", command],
            env=env,
            cwd=self.tmp,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        role = Role(name, command, popen, log, port)
        self.roles[name] = role
        return role

    def wait_ready(self, timeout: float = 90) -> None:
        """Each api answers /health/ready (Socket.IO subscription included); each worker has
        said it consumes its queues."""
        deadline = time.monotonic() + timeout
        pending = dict(self.roles)
        while pending:
            for name, role in list(pending.items()):
                if role.popen.poll() is not None:
                    raise AssertionError(f"{name} exited:\n{role.text()}")
                if self._ready(role):
                    del pending[name]
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{r.text()}" for n, r in pending.items())
                raise AssertionError(f"not ready in {timeout}s: {list(pending)}\n{logs}")
            time.sleep(0.2)

    @staticmethod
    def _ready(role: Role) -> bool:
        if role.command == "api":
            try:
                return httpx.get(f"{role.url}/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        if role.command == "worker":
            return "worker consuming" in role.text()
        return True

    def stop(self) -> dict[str, int]:
        """SIGTERM to every process, then their exit codes (a process that does not drain in
        30 s is killed and reported as -9)."""
        for role in self.roles.values():
            if role.popen.poll() is None:
                role.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, role in self.roles.items():
            try:
                codes[name] = role.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                role.popen.kill()
                role.popen.wait()
                codes[name] = -9
        self.exit_codes = codes
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{role.text()}" for name, role in self.roles.items())


@contextlib.contextmanager
def started_stack(
    tmp: Path, redis_url: str, kafka: str, smtp_url: str, roles: dict[str, str]
) -> Iterator[Stack]:
    """`roles` (name: command, each api on a free port) on a new PostgreSQL database and a Redis
    database of their own, started and ready; at the end stopped (their exit codes then in
    `exit_codes`) and the database dropped."""
    database, admin = create_database("postgres", tmp)
    with own_redis_db(redis_url) as own_redis:
        stack = Stack.configure(tmp, database, own_redis, kafka, smtp_url)
        try:
            for name, command in roles.items():
                stack.start(name, command, port=free_port() if command == "api" else None)
            stack.wait_ready()
            yield stack
        finally:
            stack.stop()
            drop_database(database, admin)


@contextlib.contextmanager
def running(
    factory: pytest.TempPathFactory,
    name: str,
    redis_url: str,
    kafka: str,
    sink: MailSink,
    roles: dict[str, str],
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """`started_stack` for a module's fixture: `env` set for its processes (they inherit the
    environment); once stopped, every role must have exited 0 (SIGTERM drains)."""
    tmp = factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        with started_stack(tmp, redis_url, kafka, sink.url, roles) as stack:
            yield stack
    assert stack.exit_codes == dict.fromkeys(stack.roles, 0), stack.logs()


def stack_fixture(name: str, roles: dict[str, str], env: dict[str, str] | None = None) -> Any:
    """A module-scoped `stack` fixture running `roles` (see `running`)."""

    @pytest.fixture(scope="module")
    def stack(
        postgres_url: str,  # asked for, so a missing PostgreSQL fails (or skips) here
        redis_url: str,
        kafka_bootstrap: str,
        module_mail_sink: MailSink,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Stack]:
        with running(
            tmp_path_factory, name, redis_url, kafka_bootstrap, module_mail_sink, roles, env
        ) as started:
            yield started

    return stack


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until `base`/health/ready answers 200 (each request may take the 3 s a check is given,
    and more); fails with the log if `process` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gatehouse exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gatehouse not ready in {timeout}s:\n{log.read_text()}")


async def run_node(
    script: str, env: dict[str, str], sink: MailSink, tmp: Path, timeout: float = 120
) -> list[dict[str, Any]]:
    """Runs a Node interop script; answers its `{"need": {"code": …, "to": …}}` lines with the
    code of the next message mailed to that address; returns every line it printed."""
    node_modules()
    stderr = (tmp / f"{Path(script).stem}.stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(INTEROP / script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, **env},
        cwd=INTEROP,
    )
    assert process.stdin is not None and process.stdout is not None
    lines: list[dict[str, Any]] = []
    mails: dict[str, int] = {}
    try:
        async with asyncio.timeout(timeout):
            while raw := await process.stdout.readline():
                line = json.loads(raw)
                lines.append(line)
                need = line.get("need")
                if need and "code" in need:
                    mails[need["to"]] = mails.get(need["to"], 0) + 1
                    code = await mailed_code(sink, need["to"], mails[need["to"]])
                    process.stdin.write(json.dumps({"code": code}).encode() + b"\n")
                    await process.stdin.drain()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
    errors = (tmp / f"{Path(script).stem}.stderr").read_text(errors="replace")
    assert process.returncode == 0, f"{script} failed: {lines}\n{errors}"
    assert lines and lines[-1] == {"done": True}, f"{lines}\n{errors}"
    return lines


@contextlib.contextmanager
def serving(
    tmp: Path,
    database: str,
    redis_url: str,
    kafka_bootstrap: str,
    smtp_url: str,
    courier_group: str,
    **settings: str,
) -> Iterator[tuple[str, Path]]:
    """(base url, log) of one `gatehouse serve` in production mode on the real services, its
    database migrated, its courier group at the end of `send-otp`; `settings` adds to the env."""
    secrets = tmp / "secrets.json"
    secrets.write_text(json.dumps(generate_secrets_document()))
    port = free_port()
    env = {
        "GATEHOUSE_ENV": "production",
        "GATEHOUSE_DATABASE_URL": database,
        "GATEHOUSE_REDIS_URL": redis_url,
        "GATEHOUSE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GATEHOUSE_SMTP_URL": smtp_url,
        "GATEHOUSE_PORT": str(port),
        "GATEHOUSE_SECRETS_FILE": str(secrets),
        "GATEHOUSE_KAFKA_COURIER_GROUP": unique(courier_group),
        **settings,
    }
    subprocess.run(
        [sys.executable, "-m", "gatehouse", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    courier_group_at_end(kafka_bootstrap, env["GATEHOUSE_KAFKA_COURIER_GROUP"])
    log = tmp / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gatehouse", "serve"],
            env={**os.environ, **env},
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        yield base, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
