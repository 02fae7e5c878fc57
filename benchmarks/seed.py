"""Benchmark fixtures written straight through Gatehouse's own adapters (setup, not measured):
users sharing one real argon2id hash, and pending registrations whose code is known. Going
through register and the mail for thousands of them would spend minutes hashing passwords that
the figure being measured never touches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.domain.codes import Purpose
from gatehouse.domain.events import new_id
from gatehouse.domain.users import PendingRegistration, User

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


async def _services(env: dict[str, str]) -> Services:
    with settings_of(env) as settings:
        return build(settings)


async def users(env: dict[str, str], count: int, prefix: str) -> list[str]:
    """`count` verified users whose password is PASSWORD; their emails."""
    services = await _services(env)
    try:
        ctx = services.ctx
        password_hash = await ctx.hasher.hash(PASSWORD)
        now = ctx.clock()
        emails = [f"{prefix}-{i}@bench.example" for i in range(count)]
        for start in range(0, count, 500):
            async with ctx.uow() as uow:
                for email in emails[start : start + 500]:
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
    finally:
        await services.aclose()


async def pending(env: dict[str, str], count: int, prefix: str) -> list[str]:
    """`count` pending registrations whose code is CODE, as register leaves them; their emails."""
    services = await _services(env)
    try:
        ctx = services.ctx
        password_hash = await ctx.hasher.hash(PASSWORD)
        now = ctx.clock()
        purpose = Purpose.REGISTER.value
        ttl = 3600
        emails = [f"{prefix}-{i}@bench.example" for i in range(count)]
        for start in range(0, count, 500):
            async with ctx.uow() as uow:
                for email in emails[start : start + 500]:
                    await uow.pending.put(
                        PendingRegistration(
                            id=new_id(),
                            email=email,
                            name="Bench",
                            password_hash=password_hash,
                            created_at=now,
                            expires_at=now + timedelta(seconds=ttl),
                        )
                    )
                await uow.commit()
            for email in emails[start : start + 500]:
                await ctx.codes.put(
                    purpose,
                    ctx.code_subject(purpose, email),
                    ctx.code_hash(purpose, email, CODE),
                    ttl,
                    ctx.policy.code_attempts,
                )
        return emails
    finally:
        await services.aclose()


def login_body(email: str) -> dict[str, Any]:
    return {"email": email, "password": PASSWORD}
