"""A verified sign-up in one statement on PostgreSQL (storage/pg_signup.py) against the ordinary
path it is derived from (registration.flow.verify_sign_up over the unit of work), on the real
database: the same user, event and record for a right code; for a wrong code, no sign-up, an
expired one or an address taken meanwhile, the same answer and nothing written by it; a sign-up
gone between the read and the write refused; one code presented many times
at once makes one account."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gatehouse.domain.codes import Purpose
from gatehouse.domain.events import new_id
from gatehouse.domain.users import PendingRegistration, User, public_view
from gatehouse.errors import AccountExists, InvalidCode
from gatehouse.ports import CodeStore
from gatehouse.ports.signup import SignUpFinish, SignUpFinishes
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.otp import store_code
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.registration.finish import SignedUp
from gatehouse.storage.pg_signup import PgSignUpFinishes
from tests.integration.at_once import START, Paths, batch_sizes, both_paths

pytestmark = pytest.mark.integration
CODE = "246810"
PURPOSE = Purpose.REGISTER.value


@pytest.fixture
async def paths(postgres_database: str, tmp_path: Path) -> AsyncIterator[Paths]:
    async with both_paths(postgres_database, tmp_path, "sign_ups", PgSignUpFinishes) as opened:
        yield opened


async def signed_up(ctx: FlowContext, n: int, *, phone: str | None = None) -> PendingRegistration:
    """A sign-up waiting for CODE, as register leaves one (its code bound to it)."""
    email = f"signup-{n}-{new_id()[:8]}@example.com"
    pending = PendingRegistration(
        id=new_id(),
        email=email,
        name="Ada",
        password_hash="$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        created_at=START,
        expires_at=START + ctx.policy.pending_ttl,
        **ctx.phone_fields(phone),
    )
    async with ctx.uow() as uow:
        await uow.pending.put(pending)
        await uow.commit()
    await store_code(ctx, PURPOSE, email, CODE, pending.id)
    return pending


async def written(paths: Paths, pending: PendingRegistration) -> dict[str, Any]:
    """What a verify leaves of the sign-up, its ids and times relative to the start."""
    users = await paths.rows("SELECT * FROM users WHERE email = :e", e=pending.email)
    left = await paths.rows(
        "SELECT name, expires_at FROM pending_registrations WHERE id = :i", i=pending.id
    )
    records = await paths.records(pending.id)
    events = await paths.rows(
        "SELECT topic, payload, created_at FROM outbox WHERE message_key = :u", u=pending.id
    )

    def plain(row: dict[str, Any]) -> dict[str, Any]:
        """The user's row but for what differs between two sign-ups (the phone: its own)."""
        kept = {k: v for k, v in row.items() if k not in ("id", "email") and "phone" not in k}
        return kept | {"same_id": row["id"] == pending.id}

    def event(row: dict[str, Any]) -> tuple[Any, ...]:
        payload = json.loads(row["payload"].replace(pending.id, "<user>"))
        data = {**payload["data"], "email": payload["data"]["email"] == pending.email}
        return row["topic"], payload["type"], payload["time"], data, row["created_at"]

    return {
        "users": [plain(u) for u in users],
        "phone": [u["phone_ciphertext"] is not None for u in users],
        "pending": left,
        "records": records,
        "events": [event(e) for e in events],
    }


def answer(done: SignedUp, pending: PendingRegistration) -> dict[str, Any]:
    user = {**done.user}
    assert user.pop("id") == pending.id and user.pop("email") == pending.email
    return {"user": user, "password_required": done.password_required}


async def test_a_right_code_writes_what_the_ordinary_path_writes(paths: Paths) -> None:
    seen, answers = [], []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        paths.clock.now = START
        pending = await signed_up(ctx, n, phone=f"+14155{n}50123")
        paths.clock.now = START + timedelta(minutes=3)
        done = await registration.verify_sign_up(ctx, email=pending.email, otp=CODE)
        answers.append(answer(done, pending))
        seen.append(await written(paths, pending))
        async with ctx.reader() as uow:
            user = await uow.users.get(pending.id)
        assert user is not None and user.email_verified_at == paths.clock.now
        assert done.user == public_view(user, f"+14155{n}50123", reveal_phone=False)
    at_once, ordinary = seen
    print(
        f"\none verify leaves, on either path: {ordinary['users'][0]['created_at']}, "
        f"{[r['action'] for r in ordinary['records']]}, {ordinary['events'][0][:3]}"
    )
    assert at_once == ordinary
    assert answers[0] == answers[1]
    assert ordinary["pending"] == [] and len(ordinary["users"]) == 1
    assert [r["action"] for r in ordinary["records"]] == ["account.create"]
    assert ordinary["events"][0][1] == "gatehouse.user.verified"
    assert ordinary["phone"] == [True]


async def take_the_address(ctx: FlowContext, pending: PendingRegistration) -> None:
    async with ctx.uow() as uow:
        await uow.users.add(
            User(
                id=new_id(),
                email=pending.email,
                name="Someone",
                password_hash="x",
                created_at=START,
                updated_at=START,
            )
        )
        await uow.commit()


@pytest.mark.parametrize("case", ["wrong_code", "no_sign_up", "expired", "address_taken"])
async def test_a_verify_that_fails_gets_the_ordinary_answer_and_writes(
    paths: Paths, case: str
) -> None:
    seen = []
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        paths.clock.now = START
        pending = await signed_up(ctx, n)
        email, otp, expected = pending.email, CODE, InvalidCode
        if case == "wrong_code":
            otp = "135790"
        elif case == "no_sign_up":
            email = f"nobody-{n}-{new_id()[:8]}@example.com"
        elif case == "expired":
            paths.clock.now = START + ctx.policy.pending_ttl + timedelta(seconds=1)
        else:
            await take_the_address(ctx, pending)
            expected = AccountExists
        before = await written(paths, pending)
        with pytest.raises(expected):
            await registration.verify_sign_up(ctx, email=email, otp=otp)
        after = await written(paths, pending)
        assert after == before  # nothing written
        seen.append(after)
    at_once, ordinary = seen
    assert at_once == ordinary


class GoneFirst:
    """The one-statement writer, but the sign-up is removed just before it runs (a concurrent
    create-user job that finished it, say)."""

    def __init__(self, inner: SignUpFinishes, ctx: FlowContext):
        self.inner, self.ctx, self.calls = inner, ctx, 0

    async def finish(self, done: SignUpFinish) -> User | None:
        self.calls += 1
        async with self.ctx.uow() as uow:
            await uow.pending.delete(done.pending_id)
            await uow.commit()
        return await self.inner.finish(done)


async def test_a_sign_up_gone_meanwhile_is_refused_and_nothing_written(paths: Paths) -> None:
    assert paths.at_once.sign_ups is not None
    gone = GoneFirst(paths.at_once.sign_ups, paths.ordinary)
    ctx = dataclasses.replace(paths.at_once, sign_ups=gone)
    pending = await signed_up(ctx, 1)
    with pytest.raises(InvalidCode):
        await registration.verify_sign_up(ctx, email=pending.email, otp=CODE)
    assert gone.calls == 1
    state = await written(paths, pending)
    assert state["users"] == [] and state["events"] == [] and state["records"] == []


async def test_one_code_presented_many_times_at_once_makes_one_account(paths: Paths) -> None:
    pending = await signed_up(paths.at_once, 1)
    results = await asyncio.gather(
        *(
            registration.verify_sign_up(paths.at_once, email=pending.email, otp=CODE)
            for _ in range(10)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, SignedUp)]
    refused = [r for r in results if isinstance(r, InvalidCode)]
    print(f"\n10 at once: {len(made)} accounts, {len(refused)} refused")
    assert len(made) == 1 and len(refused) == 9
    state = await written(paths, pending)
    assert len(state["users"]) == 1 and len(state["events"]) == 1 and state["pending"] == []


async def test_guessing_spends_the_code_on_either_path(paths: Paths) -> None:
    """An attacker guessing a sign-up's code: once its tries are spent, the right code makes no
    account either, whichever path finishes sign-ups."""
    for n, ctx in enumerate((paths.at_once, paths.ordinary)):
        pending = await signed_up(ctx, 10 + n)
        for guess in range(ctx.policy.code_attempts):
            with pytest.raises(InvalidCode):
                await registration.verify_sign_up(ctx, email=pending.email, otp=f"{guess:06d}")
        with pytest.raises(InvalidCode):
            await registration.verify_sign_up(ctx, email=pending.email, otp=CODE)
        state = await written(paths, pending)
        assert state["users"] == [] and state["events"] == [] and len(state["pending"]) == 1


async def test_sign_ups_finished_at_once_share_statements_and_each_gets_its_own(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent verifies go to PostgreSQL in batches (storage/pg_batch.py): fewer statements
    than sign-ups, each answered with its own account; one whose address became an account
    meanwhile fails alone (its batch is run again one at a time), the others are made."""
    finishes = paths.at_once.sign_ups
    assert isinstance(finishes, PgSignUpFinishes)
    sizes = batch_sizes(monkeypatch, finishes._batches)
    ctx = paths.at_once
    waiting = [await signed_up(ctx, n) for n in range(20)]
    taken = waiting[3]
    async with ctx.uow() as uow:  # the address becomes an account by another door meanwhile
        await uow.users.add(
            User(
                id=new_id(),
                email=taken.email,
                name="Other",
                password_hash=taken.password_hash,
                created_at=START,
                updated_at=START,
            )
        )
        await uow.commit()
    results = await asyncio.gather(
        *(registration.verify_sign_up(ctx, email=p.email, otp=CODE) for p in waiting),
        return_exceptions=True,
    )
    print(f"\n{len(waiting)} verifies at once went as batches of {sizes}")
    assert isinstance(results[3], AccountExists)
    assert max(sizes) > 1  # some went together
    for pending, result in zip(waiting, results, strict=True):
        state = await written(paths, pending)
        if pending is taken:
            assert [u["name"] for u in state["users"]] == ["Other"]
            assert state["events"] == [] and state["records"] == [] and len(state["pending"]) == 1
            continue
        assert isinstance(result, SignedUp), result
        assert result.user["id"] == pending.id and result.user["email"] == pending.email
        assert len(state["users"]) == 1 and state["users"][0]["same_id"]
        assert len(state["events"]) == 1 and state["pending"] == []
        assert [(r["action"], r["outcome"]) for r in state["records"]] == [
            ("account.create", "success")
        ]


class Hinted:
    """The code store, but `binding` answers `hint`: a code an earlier release stored (None) or a
    binding altered in the store (another sign-up's id)."""

    def __init__(self, inner: CodeStore, hint: str | None):
        self.inner, self.hint = inner, hint

    async def binding(self, purpose: str, subject: str) -> str | None:
        return self.hint

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_code_names_its_sign_up_so_the_verify_reads_none(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code store keeps the sign-up a code was bound to: the one-statement path finishes
    it without reading it first, and reads nothing for an address without a code. A code
    stored without its binding (by an earlier release) is finished after the read, as before."""
    reads: list[str] = []
    live_pending = registration.live_pending

    async def counted(ctx: FlowContext, uow: Any, email: str) -> PendingRegistration | None:
        reads.append(email)
        return await live_pending(ctx, uow, email)

    monkeypatch.setattr(registration, "live_pending", counted)
    pending = await signed_up(paths.at_once, 1)
    done = await registration.verify_sign_up(paths.at_once, email=pending.email, otp=CODE)
    assert done.user["id"] == pending.id and reads == []
    # No code (an address with an account gets none at register): no read either, so the
    # answer's timing does not tell it from an address with a sign-up waiting.
    with pytest.raises(InvalidCode):
        await registration.verify_sign_up(paths.at_once, email="taken@example.com", otp=CODE)
    assert reads == []
    earlier = await signed_up(paths.at_once, 2)
    ctx = dataclasses.replace(paths.at_once, codes=Hinted(paths.at_once.codes, None))
    done = await registration.verify_sign_up(ctx, email=earlier.email, otp=CODE)
    assert done.user["id"] == earlier.id and reads == [earlier.email]
    for made in (pending, earlier):
        state = await written(paths, made)
        assert len(state["users"]) == 1 and state["pending"] == [] and len(state["events"]) == 1


async def test_a_binding_altered_in_the_store_finishes_no_sign_up(paths: Paths) -> None:
    """An attacker who can write the code store points a code's binding at another live
    sign-up: the code's HMAC covers its real binding, so the check fails, as a wrong code does,
    and neither sign-up becomes an account."""
    mine, theirs = await signed_up(paths.at_once, 1), await signed_up(paths.at_once, 2)
    ctx = dataclasses.replace(paths.at_once, codes=Hinted(paths.at_once.codes, theirs.id))
    with pytest.raises(InvalidCode):
        await registration.verify_sign_up(ctx, email=mine.email, otp=CODE)
    for pending in (mine, theirs):
        state = await written(paths, pending)
        assert state["users"] == [] and state["events"] == [] and len(state["pending"]) == 1
    # It cost a try of the code, which still finishes its own sign-up.
    done = await registration.verify_sign_up(paths.at_once, email=mine.email, otp=CODE)
    assert done.user["id"] == mine.id
