"""Webhooks without services: the signature against `standardwebhooks`' own verifier, the retry
schedule, event matching, the registry's checks and pagination (on SQLite), SSRF refusals at
registration and at delivery, redirects not followed, and one connection pool per origin (a
receiver on loopback)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from gatehouse.domain import webhooks as rules
from gatehouse.domain.crypto import generate_secrets_document, parse_secrets
from gatehouse.errors import InvalidInput, NotFound
from gatehouse.ports.webhooks import Attempt
from gatehouse.storage import sql
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.sql_webhooks import SqlWebhookStore
from gatehouse.webhooks.delivery import outcome_of
from gatehouse.webhooks.httpx_client import HttpxWebhookClient
from gatehouse.webhooks.registry import Registry
from tests.webhook_receiver import Receiver


def test_the_signature_verifies_with_standardwebhooks_and_only_unaltered() -> None:
    secret = rules.new_secret()
    assert secret.startswith("whsec_") and len(rules.secret_key(secret)) == 24
    body = json.dumps({"id": "e1", "type": "gatehouse.user.logged_in"})
    stamp = int(time.time())
    headers = rules.headers(secret, "msg-1", stamp, body)
    assert Webhook(secret).verify(body, headers)["id"] == "e1"
    assert headers["webhook-signature"] == Webhook(secret).sign(
        "msg-1", datetime.fromtimestamp(stamp, UTC), body
    )
    for altered in (body + " ", body.replace("e1", "e2")):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(altered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rules.new_secret()).verify(body, headers)


def test_backoff_doubles_from_the_base_with_jitter_and_is_capped() -> None:
    exact = [rules.backoff(n, 1.0, 3600, lambda _a, _b: 1.0) for n in range(1, 15)]
    assert exact[:5] == [1, 2, 4, 8, 16] and exact[-1] == 3600
    for n in range(1, 20):
        delay = rules.backoff(n, 1.0, 3600)
        assert 0.8 * min(3600, 2 ** (n - 1)) <= delay <= 3600


def test_a_failure_past_the_window_is_final() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = rules.WebhookDelivery(
        1, "d", "w", "e", "t", "u", "{}", "pending", 0, None, None, None, now, now, None, now
    )
    failed = Attempt(500, "HTTP 500", 5)
    first = outcome_of(row, failed, now, started=now, window=timedelta(hours=24), base=1, cap=60)
    assert first.status == "pending" and first.expires_at == now + timedelta(hours=24)
    late = replace(row, attempts=9, expires_at=now + timedelta(seconds=30))
    last = outcome_of(late, failed, now, started=now, window=timedelta(hours=24), base=1, cap=60)
    assert last.status == "failed"
    ok = outcome_of(
        row, Attempt(204, None, 3), now, started=now, window=timedelta(1), base=1, cap=1
    )
    assert ok.status == "delivered" and ok.attempts == 1


def test_matching() -> None:
    assert rules.matches(["*"], "gatehouse.user.deleted")
    assert rules.matches(["gatehouse.user.*"], "gatehouse.user.deleted")
    assert not rules.matches(["gatehouse.user.*"], "gatehouse.message.sent")
    assert rules.matches(["gatehouse.message.sent"], "gatehouse.message.sent")
    assert not rules.matches(["gatehouse.message"], "gatehouse.message.sent")
    with pytest.raises(InvalidInput):
        rules.event_types([])
    with pytest.raises(InvalidInput):
        rules.event_types(["a b"])


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "0.0.0.0",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not rules.public_address(address)


def test_public_addresses_are() -> None:
    assert rules.public_address("93.184.216.34") and rules.public_address("2606:4700::1111")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlWebhookStore]:
    engine = sql.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await upgrade(engine, "head")
    yield SqlWebhookStore(engine)
    await engine.dispose()


def registry(store: SqlWebhookStore, **kwargs: bool) -> Registry:
    keyring = parse_secrets(generate_secrets_document()).keyring()
    return Registry(store, HttpxWebhookClient(), keyring, lambda: datetime.now(UTC), **kwargs)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://localhost:8080/x",
        "http://0.0.0.0/",
    ],
)
async def test_private_targets_are_refused_when_not_allowed(
    store: SqlWebhookStore, url: str
) -> None:
    with pytest.raises(InvalidInput, match=r"private|resolve"):
        await registry(store).create(url, ["*"])
    endpoint, _ = await registry(store, allow_private=True).create(url, ["*"])
    assert endpoint.url == url


async def test_production_wants_https(store: SqlWebhookStore) -> None:
    with pytest.raises(InvalidInput, match="https"):
        await registry(store, https_only=True, allow_private=True).create("http://a.test/", ["*"])
    for bad in ("ftp://a.test/", "https://user:pw@a.test/", "not a url"):
        with pytest.raises(InvalidInput):
            await registry(store, allow_private=True).create(bad, ["*"])


async def test_a_loopback_target_is_refused_at_delivery_too() -> None:
    attempt = await HttpxWebhookClient(2, allow_private=False).post(
        "http://127.0.0.1:9/", b"{}", {}
    )
    assert attempt.status_code is None and "private" in (attempt.error or "")


async def test_pages_and_crud(store: SqlWebhookStore) -> None:
    reg = registry(store, allow_private=True)
    made = sorted([(await reg.create(f"http://h{i}.test/", ["*"]))[0].id for i in range(5)])
    page = await reg.list(None, 2)
    seen = [e.id for e in page.items]
    while page.next_cursor:
        page = await reg.list(page.next_cursor, 2)
        seen += [e.id for e in page.items]
    assert seen == made
    paused = await reg.update(made[0], paused=True, events=["gatehouse.user.*"])
    assert paused.paused and paused.events == ("gatehouse.user.*",)
    await reg.delete(made[0])
    with pytest.raises(NotFound):
        await reg.get(made[0])
    with pytest.raises(InvalidInput):
        await reg.list("garbage!", 2)


async def test_redirects_are_not_followed() -> None:
    receiver = Receiver(behaviour=lambda path, _s: (302 if path == "/moved" else 200, 0.0))
    receiver.start()
    try:
        client = HttpxWebhookClient(2, allow_private=True)
        attempt = await client.post(receiver.url("/moved"), b"{}", {"webhook-id": "x"})
        await client.aclose()
    finally:
        receiver.stop()
    assert attempt.status_code == 302 and not attempt.ok
    assert [r.path for r in receiver.received] == ["/moved"]  # /elsewhere never asked


async def test_one_connection_pool_per_origin_the_idle_oldest_closed_past_the_limit() -> None:
    receivers = [Receiver() for _ in range(3)]
    for receiver in receivers:
        receiver.start()
    client = HttpxWebhookClient(2, allow_private=True, pools=2)
    try:
        for receiver in (*receivers[:2], receivers[0]):
            attempt = await client.post(receiver.url("/a"), b"{}", {"webhook-id": "x"})
            assert attempt.ok
        first = client._pools[f"http://127.0.0.1:{receivers[0].port}"].http
        assert len(client._pools) == 2  # /a twice on one origin: one pool, reused
        assert (await client.post(receivers[2].url("/b"), b"{}", {})).ok
        assert list(client._pools) == [
            f"http://127.0.0.1:{receivers[0].port}",
            f"http://127.0.0.1:{receivers[2].port}",
        ]  # the second origin's pool, the least recently used, was closed
        assert not first.is_closed
        assert (await client.post(receivers[1].url("/c"), b"{}", {})).ok
        assert first.is_closed and len(client._pools) == 2
    finally:
        await client.aclose()
        for receiver in receivers:
            receiver.stop()
    assert client._pools == {}
