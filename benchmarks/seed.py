"""Benchmark fixtures written straight through Gatehouse's own adapters (setup, not measured):
users sharing one real argon2id hash, and pending registrations whose code is known. Going
through register and the mail for thousands of them would spend minutes hashing passwords that
the figure being measured never touches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.domain.codes import Purpose
from gatehouse.domain.events import new_id
from gatehouse.domain.users import PendingRegistration, User
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.otp import bound_code_hash

PASSWORD = "correct horse battery staple"
CODE = "424242"


@contextlib.contextmanager
def settings_of(env: dict[str, str]) -> Iterator[Settings]:
    """Settings exactly as the processes under test read them from their environment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def services(env: dict[str, str]) -> Services:
    """Gatehouse's services built as the processes under test build them."""
    with settings_of(env) as settings:
        return build(settings)


BATCH = 500  # rows a transaction


@contextlib.asynccontextmanager
async def seeding(env: dict[str, str]) -> AsyncIterator[tuple[FlowContext, str]]:
    """The flow context, and PASSWORD's hash (one argon2id for every seeded row)."""
    built = services(env)
    try:
        yield built.ctx, await built.ctx.hasher.hash(PASSWORD)
    finally:
        await built.aclose()


def batches(emails: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(emails), BATCH):
        yield emails[start : start + BATCH]


async def users(env: dict[str, str], count: int, prefix: str) -> list[str]:
    """`count` verified users whose password is PASSWORD; their emails."""
    emails = [f"{prefix}-{i}@bench.example" for i in range(count)]
    async with seeding(env) as (ctx, password_hash):
        now = ctx.clock()
        for batch in batches(emails):
            async with ctx.uow() as uow:
                for email in batch:
                    user = User(
                        id=new_id(),
                        email=email,
                        name="Bench",
                        password_hash=password_hash,
                        created_at=now,
                        updated_at=now,
                        email_verified_at=now,
                    )
                    await uow.users.add(user)
                await uow.commit()
    return emails


async def pending(env: dict[str, str], count: int, prefix: str) -> list[str]:
    """`count` pending registrations whose code is CODE, as register leaves them; their emails."""
    emails = [f"{prefix}-{i}@bench.example" for i in range(count)]
    purpose = Purpose.REGISTER.value
    ttl = 3600
    async with seeding(env) as (ctx, password_hash):
        now = ctx.clock()
        ids = {email: new_id() for email in emails}
        for batch in batches(emails):
            async with ctx.uow() as uow:
                for email in batch:
                    await uow.pending.put(
                        PendingRegistration(
                            id=ids[email],
                            email=email,
                            name="Bench",
                            password_hash=password_hash,
                            created_at=now,
                            expires_at=now + timedelta(seconds=ttl),
                        )
                    )
                await uow.commit()
            for email in batch:
                await ctx.codes.put(
                    purpose,
                    ctx.code_subject(purpose, email),
                    # Bound to its pending registration, as register binds it (and for as long
                    # as the sign-up lives: a policy's 10 minutes could end mid-bench).
                    bound_code_hash(ctx, purpose, email, CODE, ids[email]),
                    ttl,
                    ctx.policy.code_attempts,
                    ids[email],
                )
    return emails


def login_body(email: str) -> dict[str, Any]:
    return {"email": email, "password": PASSWORD}
