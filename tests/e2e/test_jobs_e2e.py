"""End to end, with real clients: `gatehouse api`, `worker`, `relay` and `courier` as processes on
PostgreSQL, Redis, Kafka and an SMTP sink. Node (npm bullmq + socket.io-client) and Python
(python bullmq + python-socketio) producers run the seeds' journey through every queue and
receive each result as a Socket.IO `notification`; bad jobs complete with a refusal."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from bullmq import Job, Queue

from gatehouse.domain.crypto import parse_secrets
from gatehouse.domain.tokens import AccessTokens
from gatehouse.jobs.dispatch import QUEUES
from tests.conftest import MailSink, unique
from tests.e2e.stack import Stack, mailed_code, module_mail_sink, run_node, running

pytestmark = pytest.mark.e2e
__all__ = ["module_mail_sink"]  # a fixture, imported for this module's processes
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ubadour and a second horse"
SMS_CODE = re.compile(r"confirm this number is (\d{6})")


@pytest.fixture(scope="module")
def stack(
    postgres_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    module_mail_sink: MailSink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    roles = {"api": "api", "worker": "worker", "relay": "relay", "courier": "courier"}
    with running(
        tmp_path_factory, "jobs-e2e", redis_url, kafka_bootstrap, module_mail_sink, roles
    ) as stack:
        yield stack
    logs = stack.logs()
    assert "worker stopped" in stack.roles["worker"].text()
    for secret in (PASSWORD, NEW_PASSWORD):
        assert secret not in logs  # job data is never logged


def api_url(stack: Stack) -> str:
    return stack.roles["api"].url


# --- Node ------------------------------------------------------------------------------------


async def test_node_bullmq_producer_and_socketio_client_run_every_queue(
    stack: Stack, module_mail_sink: MailSink, tmp_path: Path
) -> None:
    email = f"{unique('node')}@example.com"
    env = {
        "GATEHOUSE_URL": api_url(stack),
        "REDIS_URL": stack.env["GATEHOUSE_REDIS_URL"],
        "EMAIL": email,
        "PASSWORD": PASSWORD,
        "NEW_PASSWORD": NEW_PASSWORD,
    }
    lines = await run_node("seed_flow.mjs", env, module_mail_sink, tmp_path)
    print("\nNode client (npm bullmq + socket.io-client) lines:")
    for line in lines:
        print(json.dumps(line))
    steps = {line["step"]: line for line in lines if "step" in line and "queue" in line}

    assert {line["queue"] for line in steps.values()} == set(QUEUES)
    for step, line in steps.items():
        note = line["notification"]
        assert note["job_id"] == line["job_id"] and note["queue"] == line["queue"], step
        assert line["state"] == "completed", step  # refusals complete too: never retried
        assert line["returnvalue_matches"] is True, step  # Node reads the Python worker's result
        # ...without a credential or a full phone: those travel only in the push.
        assert line["returnvalue_secrets"] == [], (step, line)

    def ok(step: str) -> dict[str, Any]:
        note: dict[str, Any] = steps[step]["notification"]
        assert note["success"] is True, note
        return note

    ok("verification")
    user = ok("create-user")["data"]["user"]
    assert user["email"] == email and user["name"] == "Ada Lovelace"
    assert user["phone"].endswith("0123") and "password_hash" not in user  # masked or not
    login = ok("verify-user")
    assert login["message"] == "Logged in successfully"
    assert {"token", "refresh_token", "user"} <= set(login["data"])
    assert "[redacted]" not in (login["data"]["token"], login["data"]["refresh_token"])  # pushed
    profile = ok("read-user")["data"]["user"]  # heard in room user:<id>
    assert profile["id"] == user["id"] and profile["phone"] == "+14155550123"  # the owner's view
    assert ok("update-user")["data"]["user"]["name"] == "Ada King"
    assert [s["current"] for s in ok("sessions-list")["data"]["sessions"]] == [True]
    setup = ok("mfa-totp-setup")["data"]  # the secret in the push only (see returnvalue_secrets)
    assert setup["otpauth_uri"].startswith("otpauth://totp/") and len(setup["secret"]) == 32
    ok("password-recovery-request")
    ok("password-recovery-reset")
    ok("verify-user-new-password")
    ok("delete-user")
    for refused in ("read-user-revoked-token", "read-user-deleted"):
        note = steps[refused]["notification"]
        assert note["success"] is False and note["code"] == "invalid_token", note

    others = {line["step"]: line for line in lines if "step" in line and "queue" not in line}
    forged = others["forged-token-socket"]
    assert forged["refused"] is True and forged["code"] == "invalid_token"
    assert others["session.revoked"]["event"] == {"reason": "password_reset"}


# --- Python ----------------------------------------------------------------------------------


class Client:
    """A python-socketio client that files each `notification` under its job id."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.notes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.order: list[str] = []
        self.revoked: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio.on("notification", self._on_note)
        self.sio.on("session.revoked", self.revoked.put_nowait)

    def _future(self, job_id: str) -> asyncio.Future[dict[str, Any]]:
        return self.notes.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def _on_note(self, note: dict[str, Any]) -> None:
        self.order.append(note["job_id"])
        self._future(note["job_id"]).set_result(note)

    async def connect(self, url: str, token: str | None = None) -> Client:
        auth = {"token": token} if token else None
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
        return self

    @property
    def sid(self) -> str:
        sid: str = self.sio.get_sid()
        return sid

    async def note(self, job_id: str) -> dict[str, Any]:
        return await asyncio.wait_for(self._future(job_id), 30)


class Producer:
    """Seed-style jobs with python bullmq: the producer picks the job id."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, {"connection": self.redis_url})
        return self.queues[name]

    async def add(self, queue: str, data: Any, name: str | None = None) -> str:
        job_id = unique(f"py-{queue}")
        options = {
            "jobId": job_id,
            "attempts": 3,
            "backoff": {"type": "exponential", "delay": 1000},
        }
        await self.queue(queue).add(name or queue, data, options)
        return job_id

    async def run(
        self, client: Client, queue: str, data: dict[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        return await client.note(await self.add(queue, data, name))

    async def finished(self, queue: str, job_id: str) -> Job:
        async with asyncio.timeout(30):
            while True:
                job = await Job.fromId(self.queue(queue), job_id)
                if job is not None and await job.getState() in ("completed", "failed"):
                    # Read again: the copy read before the state was final may lack the result.
                    final = await Job.fromId(self.queue(queue), job_id)
                    assert final is not None
                    return final
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for queue in self.queues.values():
            await queue.close()


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[Producer]:
    made = Producer(stack.env["GATEHOUSE_REDIS_URL"])
    yield made
    await made.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.sio.disconnect()


async def connect(stack: Stack, clients: list[Client], token: str | None = None) -> Client:
    client = await Client().connect(api_url(stack), token)
    clients.append(client)
    return client


async def sign_up(
    producer: Producer, client: Client, sink: MailSink, email: str, password: str = PASSWORD
) -> tuple[dict[str, Any], str]:
    """verification → create-user → verify-user, as jobs; the user and an access token."""
    sent = await producer.run(
        client,
        "verification",
        {"channel": "email", "to": email, "purpose": "register", "notify": client.sid},
    )
    assert sent["success"] is True, sent
    code = await mailed_code(sink, email, 1)
    created = await producer.run(
        client,
        "create-user",
        {"email": email, "otp": code, "password": password, "name": "Grace", "notify": client.sid},
    )
    assert created["success"] is True, created
    login = await producer.run(
        client, "verify-user", {"email": email, "password": password, "notify": client.sid}
    )
    assert login["success"] is True and login["message"] == "Logged in successfully", login
    return created["data"]["user"], login["data"]["token"]


async def sms_code(stack: Stack, timeout: float = 30) -> str:
    """The newest phone code the courier printed (no SMS provider: the console channel)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := SMS_CODE.findall(stack.roles["courier"].text())):
        assert asyncio.get_running_loop().time() < deadline, "no phone code printed"
        await asyncio.sleep(0.1)
    code: str = found[-1]
    return code


async def test_python_bullmq_producer_and_socketio_client_run_every_queue(
    stack: Stack, producer: Producer, clients: list[Client], module_mail_sink: MailSink
) -> None:
    email = f"{unique('py')}@example.com"
    anonymous = await connect(stack, clients)
    user, token = await sign_up(producer, anonymous, module_mail_sink, email)
    account = await connect(stack, clients, token)

    read = await producer.run(
        account, "read-user", {"token": token, "notify": f"user:{user['id']}"}
    )
    assert read["success"] is True and read["data"]["user"]["email"] == email
    asked = await producer.run(
        anonymous,
        "update-user",
        {"token": token, "phone": "+442071838750", "notify": anonymous.sid},
    )
    # A new phone is pending until the code sent to it (printed by the console courier) is back.
    assert asked["success"] is True and asked["data"]["phone_pending"].endswith("8750")
    assert asked["data"]["user"]["phone"] is None
    confirm = {"token": token, "phone_otp": await sms_code(stack), "notify": anonymous.sid}
    updated = await producer.run(anonymous, "update-user", confirm)
    assert updated["success"] is True and updated["data"]["user"]["phone"].endswith("8750")
    read = await producer.run(anonymous, "read-user", {"token": token, "notify": anonymous.sid})
    assert read["data"]["user"]["phone"] == "+442071838750"  # stored encrypted, read back whole

    asked = await producer.run(
        anonymous,
        "password-recovery",
        {"email": email, "channel": "email", "notify": anonymous.sid},
        name="request",
    )
    assert asked["success"] is True, asked
    code = await mailed_code(module_mail_sink, email, 3)  # after the new phone's notice
    reset = await producer.run(
        anonymous,
        "password-recovery",
        {"email": email, "otp": code, "new_password": NEW_PASSWORD, "notify": anonymous.sid},
        name="reset",
    )
    assert reset["success"] is True, reset
    assert await asyncio.wait_for(account.revoked.get(), 30) == {"reason": "password_reset"}

    login = await producer.run(
        anonymous,
        "verify-user",
        {"email": email, "password": NEW_PASSWORD, "notify": anonymous.sid},
    )
    fresh = login["data"]["token"]
    deleted = await producer.run(
        anonymous,
        "delete-user",
        {"token": fresh, "password": NEW_PASSWORD, "notify": anonymous.sid},
    )
    assert deleted["success"] is True, deleted
    gone = await producer.run(anonymous, "read-user", {"token": fresh, "notify": anonymous.sid})
    assert gone["success"] is False and gone["code"] == "invalid_token"


async def test_the_http_door_queues_idempotently_and_reports_the_result(
    stack: Stack, producer: Producer, clients: list[Client], module_mail_sink: MailSink
) -> None:
    anonymous = await connect(stack, clients)
    user, token = await sign_up(producer, anonymous, module_mail_sink, f"{unique('door')}@x.io")
    key = unique("idempotency-key")
    body = {"data": {"token": token, "notify": anonymous.sid}}
    async with httpx.AsyncClient(base_url=api_url(stack), timeout=10) as http:
        first = await http.post("/api/jobs/read-user", json=body, headers={"Idempotency-Key": key})
        again = await http.post("/api/jobs/read-user", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 202, first.text
        assert first.json()["data"] == again.json()["data"] == {"job_id": key, "queue": "read-user"}
        note = await anonymous.note(key)
        assert note["success"] is True and note["data"]["user"]["id"] == user["id"]
        state = (await http.get(f"/api/jobs/read-user/{key}")).json()["data"]
    assert state["state"] == "completed" and state["attempts_made"] == 1  # ran once
    assert state["result"]["data"]["user"]["id"] == user["id"]
    assert anonymous.order.count(key) == 1


async def test_bad_jobs_complete_with_a_clear_refusal_and_the_worker_keeps_going(
    stack: Stack, producer: Producer, clients: list[Client], module_mail_sink: MailSink
) -> None:
    anonymous = await connect(stack, clients)
    alice, alice_token = await sign_up(
        producer, anonymous, module_mail_sink, f"{unique('alice')}@example.com"
    )
    bob, bob_token = await sign_up(
        producer, anonymous, module_mail_sink, f"{unique('bob')}@example.com"
    )
    sid = anonymous.sid

    async def refused(queue: str, data: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        note = await producer.run(anonymous, queue, {**data, "notify": sid}, name)
        assert note["success"] is False and note["message"], note
        return note

    missing = await refused("create-user", {"email": "x@example.com"})
    assert missing["code"] == "invalid_input"
    assert {e["field"] for e in missing["errors"]} >= {"otp", "password", "name"}
    wrong_type = await refused("read-user", {"token": 12345})
    assert wrong_type["code"] == "invalid_input"
    unknown = await refused("password-recovery", {"email": "x@example.com"}, name="explode")
    assert "Unknown job" in unknown["message"]
    assert (await refused("verification", {"channel": "pigeon", "to": "x", "purpose": "register"}))[
        "code"
    ] == "invalid_input"
    forged = await refused("read-user", {"token": alice_token[:-4] + "AAAA"})
    assert forged["code"] == "invalid_token"
    secrets = parse_secrets(stack.secrets)
    tokens = AccessTokens(
        secrets.signing_keys,
        issuer="gatehouse",
        audience="gatehouse",
        ttl=timedelta(minutes=15),
        algorithms=["EdDSA"],
    )
    expired, _ = tokens.issue(alice["id"], "a-session", datetime.now(UTC) - timedelta(hours=1))
    assert (await refused("read-user", {"token": expired}))["code"] == "invalid_token"

    # Data that is not an object cannot name a room: the refusal is in the job's result.
    job_id = await producer.add("read-user", ["not", "an", "object"])
    job = await producer.finished("read-user", job_id)
    assert job.returnvalue["success"] is False and "JSON object" in job.returnvalue["message"]

    # Another user's account: Alice's token acts on Alice only, and her results never reach
    # Bob's room even when the job asks for it.
    bob_socket = await connect(stack, clients, bob_token)
    job_id = await producer.add(
        "update-user", {"token": alice_token, "name": "Mallory", "notify": f"user:{bob['id']}"}
    )
    job = await producer.finished("update-user", job_id)
    assert job.returnvalue["success"] is True
    assert job.returnvalue["data"]["user"]["id"] == alice["id"]
    wrong_password = await refused(
        "delete-user", {"token": alice_token, "password": PASSWORD[::-1]}
    )
    assert wrong_password["code"] == "invalid_credentials"
    mine = await producer.run(
        bob_socket, "read-user", {"token": bob_token, "notify": f"user:{bob['id']}"}
    )
    assert mine["data"]["user"]["name"] == "Grace"  # Bob untouched
    assert bob_socket.order == [mine["job_id"]]  # and nothing of Alice's reached his room

    # The worker is still there and still works.
    assert stack.roles["worker"].popen.poll() is None
    alive = await producer.run(anonymous, "read-user", {"token": alice_token, "notify": sid})
    assert alive["success"] is True and alive["data"]["user"]["name"] == "Mallory"
