"""The webhook store's contract (`storage/sql_webhooks.py`) on SQLite, PostgreSQL and MariaDB:
endpoints registered, listed a page at a time, paused and resumed, removed with their deliveries;
deliveries enqueued once per endpoint and event; leased a batch at a time, only the head of each
user's chain, within each endpoint's room, never to two owners at once; attempts recorded with
the lease, the next of a chain due in the same transaction; failed ones listed and redelivered,
one or all since a time. Times come back aware, to the microsecond."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.domain.webhooks import DELIVERED, FAILED, PENDING, Endpoint, WebhookDelivery
from gatehouse.ports.webhooks import Attempt, Outcome
from gatehouse.storage.sql_webhooks import SqlWebhookStore
from tests.integration.conftest import NOW

pytestmark = pytest.mark.parametrize(
    "backend_database", ["sqlite", "postgres", "mariadb"], indirect=True, scope="session"
)
LEASE = timedelta(seconds=60)


@pytest.fixture
def store(engine: AsyncEngine) -> SqlWebhookStore:
    return SqlWebhookStore(engine)


def an_endpoint(n: int, **changes: object) -> Endpoint:
    fields: dict[str, object] = {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "url": f"https://hooks{n}.example/in?é=1",
        "events": ("gatehouse.user.*", "gatehouse.message.sent"),
        "description": f"endpoint {n} — test",
        "paused": False,
        "secret_ciphertext": f"ciphertext-{n}",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Endpoint(**{**fields, **changes})  # type: ignore[arg-type]


def a_delivery(endpoint: Endpoint, event: str, user: str, at: datetime = NOW) -> WebhookDelivery:
    body = f'{{"id": "{event}", "subject": "{user}", "data": "ü"}}'
    return WebhookDelivery(
        0,
        f"d-{endpoint.id[-4:]}-{event}",
        endpoint.id,
        event,
        "gatehouse.user.logged_in",
        user,
        body,
        PENDING,
        0,
        None,
        None,
        None,
        at,
        at,
        None,
        at,
    )


def ok(at: datetime, attempts: int = 1) -> Outcome:
    return Outcome(DELIVERED, attempts, Attempt(204, None, 12, ""), at, at, at + timedelta(1))


def refused(at: datetime, status: str = PENDING, attempts: int = 1) -> Outcome:
    error = "HTTP 500: " + "x" * 400  # written cut to 200 characters
    later = at + timedelta(seconds=2)
    return Outcome(status, attempts, Attempt(500, error, 7, "x"), at, later, at + timedelta(1))


async def claim(
    store: SqlWebhookStore,
    owner: str = "a",
    at: datetime = NOW,
    limit: int = 50,
    room: dict[str, int] | None = None,
    default: int = 10,
    known: dict[str, datetime] | None = None,
) -> tuple[list[str], list[Endpoint]]:
    """Event ids leased (in lease order) and endpoints answered."""
    claimed, endpoints = await store.claim_due(
        owner, at, at + LEASE, limit, room or {}, default, known or {}
    )
    assert all(x.lease_owner == owner and x.lease_until == at + LEASE for x in claimed)
    return [x.event_id for x in claimed], endpoints


async def test_endpoints_are_registered_listed_paused_resumed_and_removed(
    store: SqlWebhookStore,
) -> None:
    made = [an_endpoint(n) for n in (3, 1, 2)]
    for endpoint in made:
        await store.add(endpoint)
    first = await store.get(made[1].id)
    assert first == made[1] and first.created_at.tzinfo is not None
    assert await store.get("nope") is None
    ordered = sorted(made, key=lambda e: e.id)
    assert await store.page(None, 2) == ordered[:2]
    assert await store.page(ordered[1].id, 2) == ordered[2:]
    assert sorted(await store.active(), key=lambda e: e.id) == ordered

    paused = replace(made[0], paused=True, updated_at=NOW + timedelta(seconds=1))
    assert await store.update(paused)
    assert (await store.get(made[0].id)) == paused
    resumed = replace(paused, paused=False, events=("*",), updated_at=NOW + timedelta(seconds=2))
    assert await store.update(resumed) and (await store.get(made[0].id)) == resumed
    assert not await store.update(an_endpoint(9))

    await store.enqueue([a_delivery(made[0], "e1", "u1")])
    assert await store.delete(made[0].id)
    assert await store.get(made[0].id) is None
    assert await store.deliveries(made[0].id, None, None, 10) == []
    assert not await store.delete(made[0].id)


async def test_an_event_is_one_delivery_per_endpoint_however_often_enqueued(
    store: SqlWebhookStore,
) -> None:
    one, two = an_endpoint(1), an_endpoint(2)
    await store.add(one)
    await store.add(two)
    first = [a_delivery(one, "e1", "u"), a_delivery(two, "e1", "u")]
    assert await store.enqueue(first) == 2
    again = [replace(first[0], id="other-id"), a_delivery(one, "e2", "u")]
    assert await store.enqueue(again) == 1  # the event read again is skipped, the new one kept
    assert await store.enqueue([]) == 0
    rows = await store.deliveries(one.id, None, None, 10)
    assert [r.event_id for r in rows] == ["e2", "e1"]  # newest first
    assert rows[1] == replace(first[0], seq=rows[1].seq)


async def test_only_each_chain_head_is_due_and_the_next_comes_with_its_outcome(
    store: SqlWebhookStore,
) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue(
        [
            a_delivery(endpoint, "a1", "ada"),
            a_delivery(endpoint, "b1", "bob"),
            a_delivery(endpoint, "a2", "ada"),
            a_delivery(endpoint, "a3", "ada"),
            a_delivery(endpoint, "later", "cy", NOW + timedelta(minutes=5)),
        ]
    )
    leased, endpoints = await claim(store)
    assert leased == ["a1", "b1"] and endpoints == [endpoint]
    assert await claim(store, owner="b") == ([], [])  # leased: nobody else's
    [a1] = [r for r in await store.deliveries(endpoint.id, None, None, 10) if r.event_id == "a1"]

    # a1's outcome and the next lease in one transaction: a2 is due at once.
    later = NOW + timedelta(seconds=1)
    written, claimed, fresh = await store.settle_and_claim(
        "a", [(a1.id, ok(later))], later, later + LEASE, 10, {}, 10, {endpoint.id: NOW}
    )
    assert written == [True] and [x.event_id for x in claimed] == ["a2"] and fresh == []
    done = await store.get_delivery(endpoint.id, a1.id)
    assert done is not None and done.status == DELIVERED and done.attempts == 1
    assert done.delivered_at == later and done.last_status_code == 204 and done.duration_ms == 12
    assert done.lease_owner is None and done.lease_until is None and done.last_error is None
    # Another owner's outcome, or one already written, is not.
    assert await store.finish_many("b", [(claimed[0].id, ok(later))]) == [False]
    assert await store.finish_many("a", [(a1.id, ok(later))]) == [False]
    # Leases still held, and one not yet due: nothing; then expired leases and due: all three.
    assert await claim(store, at=NOW + timedelta(seconds=30)) == ([], [])
    ids, _ = await claim(store, owner="b", at=NOW + timedelta(minutes=5))
    assert sorted(ids) == ["a2", "b1", "later"]


async def test_a_lease_that_expired_goes_to_another_owner_with_the_same_id(
    store: SqlWebhookStore,
) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue([a_delivery(endpoint, "e1", "u")])
    first, _ = await store.claim_due("a", NOW, NOW + LEASE, 5, {}, 4, {})
    expired = NOW + LEASE + timedelta(microseconds=1)
    second, _ = await store.claim_due("b", expired, expired + LEASE, 5, {}, 4, {})
    assert [x.id for x in second] == [x.id for x in first] and len(first) == 1
    assert await store.finish_many("a", [(first[0].id, ok(expired))]) == [False]
    assert await store.finish_many("b", [(first[0].id, ok(expired))]) == [True]


async def test_each_endpoint_gets_no_more_than_its_room_and_paused_ones_none(
    store: SqlWebhookStore,
) -> None:
    busy, roomy, paused = an_endpoint(1), an_endpoint(2), an_endpoint(3, paused=True)
    for endpoint in (busy, roomy, paused):
        await store.add(endpoint)
        await store.enqueue([a_delivery(endpoint, f"e{n}", f"user{n}") for n in range(4)])
    ids, endpoints = await claim(store, room={busy.id: 1}, default=3)
    assert sorted(ids) == ["e0", "e0", "e1", "e2"]
    assert sorted(e.id for e in endpoints) == [busy.id, roomy.id]
    # An endpoint at its limit (room 0) is left out; the cached ones are not sent again.
    ids, endpoints = await claim(
        store, room={busy.id: 0}, known={busy.id: NOW, roomy.id: NOW}, default=3
    )
    assert ids == ["e3"] and endpoints == []
    # Resumed (a new `updated_at`): its deliveries are due, and its row is answered again.
    resumed = replace(paused, paused=False, updated_at=NOW + timedelta(seconds=1))
    await store.update(resumed)
    ids, endpoints = await claim(
        store, limit=2, room={busy.id: 0, roomy.id: 0}, known={paused.id: NOW}
    )
    assert len(ids) == 2 and endpoints == [resumed]


async def test_two_owners_claiming_at_once_never_share_a_delivery(
    store: SqlWebhookStore, backend_database: tuple[str, str]
) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue([a_delivery(endpoint, f"e{n}", f"user{n}") for n in range(40)])
    results = await asyncio.gather(
        *(store.claim_due(f"owner{n}", NOW, NOW + LEASE, 15, {}, 40, {}) for n in range(4))
    )
    taken = [x.id for claimed, _ in results for x in claimed]
    assert len(taken) == len(set(taken)) and taken, backend_database[0]
    # Where one lost a row to another it leased fewer; what is left goes to the next claim.
    rest, _ = await store.claim_due("owner9", NOW, NOW + LEASE, 40, {}, 40, {})
    assert sorted(taken + [x.id for x in rest]) == sorted({*taken, *(x.id for x in rest)})
    assert len(taken) + len(rest) == 40


async def test_attempts_are_recorded_failed_ones_listed_and_redelivered(
    store: SqlWebhookStore,
) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue(
        [a_delivery(endpoint, f"e{n}", "ada", NOW + timedelta(seconds=n)) for n in range(3)]
    )
    at = NOW + timedelta(seconds=10)
    [first] = (await store.claim_due("a", at, at + LEASE, 5, {}, 4, {}))[0]
    assert await store.finish_many("a", [(first.id, refused(at))]) == [True]
    retried = await store.get_delivery(endpoint.id, first.id)
    assert retried is not None and retried.status == PENDING and retried.attempts == 1
    assert retried.last_status_code == 500 and retried.last_error == ("HTTP 500: " + "x" * 190)
    assert retried.next_attempt_at == at + timedelta(seconds=2) and retried.lease_owner is None
    assert await claim(store, at=at + timedelta(seconds=1)) == ([], [])  # backing off

    # Failed for good: the chain moves on; the log lists it by status, newest first, in pages.
    at2 = at + timedelta(seconds=2)
    [again] = (await store.claim_due("a", at2, at2 + LEASE, 5, {}, 4, {}))[0]
    assert again.id == first.id and again.attempts == 1
    written, claimed, _ = await store.settle_and_claim(
        "a", [(first.id, refused(at2, FAILED, 2))], at2, at2 + LEASE, 5, {}, 4, {}
    )
    assert written == [True] and [x.event_id for x in claimed] == ["e1"]
    await store.finish_many("a", [(claimed[0].id, refused(at2, FAILED))])
    failed = await store.deliveries(endpoint.id, FAILED, None, 10)
    assert [r.event_id for r in failed] == ["e1", "e0"]
    assert [r.event_id for r in await store.deliveries(endpoint.id, FAILED, failed[0].seq, 10)] == [
        "e0"
    ]
    assert [r.event_id for r in await store.deliveries(endpoint.id, PENDING, None, 10)] == ["e2"]

    # Redeliver one: pending again, due now, a new window; a pending one is not "redelivered".
    at3 = at2 + timedelta(minutes=1)
    assert await store.redeliver(endpoint.id, at3, delivery_id=first.id, since=None) == 1
    back = await store.get_delivery(endpoint.id, first.id)
    assert back is not None and back.status == PENDING and back.next_attempt_at == at3
    assert back.expires_at is None and back.attempts == 2  # the log keeps its past attempts
    assert await store.redeliver(endpoint.id, at3, delivery_id=first.id, since=None) == 0
    # Due at once; e2 waits on the one just before it (e1, failed), not on e0: a redelivered
    # delivery does not hold back the user's newer ones.
    assert await claim(store, at=at3) == (["e0", "e2"], [endpoint])
    # All failed since a time: e1 (created at +1 s), not anything before.
    since = NOW + timedelta(seconds=1)
    assert await store.redeliver(endpoint.id, at3, delivery_id=None, since=since) == 1
    assert [r.event_id for r in await store.deliveries(endpoint.id, FAILED, None, 10)] == []
    assert await store.redeliver("other", at3, delivery_id=None, since=NOW) == 0


async def test_redelivered_ones_in_a_row_go_in_order(store: SqlWebhookStore) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue([a_delivery(endpoint, f"e{n}", "ada") for n in range(3)])
    for n in range(3):  # each fails for good in turn
        [head] = (await store.claim_due("a", NOW, NOW + LEASE, 5, {}, 4, {}))[0]
        assert head.event_id == f"e{n}"
        assert await store.finish_many("a", [(head.id, refused(NOW, FAILED))]) == [True]
    assert await store.redeliver(endpoint.id, NOW, delivery_id=None, since=NOW) == 3
    for n in range(3):  # one at a time, oldest first, each once the one before is settled
        [head] = (await store.claim_due("a", NOW, NOW + LEASE, 5, {}, 4, {}))[0]
        assert head.event_id == f"e{n}" and head.attempts == 1
        assert await store.finish_many("a", [(head.id, ok(NOW, 2))]) == [True]
    assert {r.status for r in await store.deliveries(endpoint.id, None, None, 10)} == {DELIVERED}


async def test_release_frees_a_lease_only_for_its_owner(store: SqlWebhookStore) -> None:
    endpoint = an_endpoint(1)
    await store.add(endpoint)
    await store.enqueue([a_delivery(endpoint, "e1", "u")])
    [leased] = (await store.claim_due("a", NOW, NOW + LEASE, 5, {}, 4, {}))[0]
    await store.release(leased.id, "b")
    assert await claim(store, owner="b") == ([], [])
    await store.release(leased.id, "a")
    assert (await claim(store, owner="b"))[0] == ["e1"]


async def test_a_backlog_at_one_endpoint_hides_no_other_endpoints_deliveries(
    store: SqlWebhookStore,
) -> None:
    dead, other = an_endpoint(1), an_endpoint(2)
    await store.add(dead)
    await store.add(other)
    older = NOW - timedelta(hours=1)
    await store.enqueue(
        [a_delivery(dead, f"d{n}", f"user{n}", older + timedelta(seconds=n)) for n in range(30)]
    )
    await store.enqueue([a_delivery(other, "o0", "user0")])
    ids, endpoints = await claim(store, limit=4, default=2)  # 8 read: all the dead one's
    assert sorted(ids) == ["d0", "d1", "o0"]
    assert sorted(e.id for e in endpoints) == [dead.id, other.id]
