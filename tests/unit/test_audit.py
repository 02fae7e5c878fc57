"""The audit trail: every authentication operation logged with factor and outcome, and never a
secret in the lines, including as JSON."""

from __future__ import annotations

import json
import logging

import pytest

from gatehouse.errors import InvalidCode, InvalidCredentials, InvalidToken
from gatehouse.observability.logs import JsonFormatter
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.profile import flow as profile
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.sessions import rotation as session
from tests.fakes import MemoryDatabase

from .helpers import last_code, other_code

PASSWORD = "correct horse battery staple"


def audits(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [r.audit for r in caplog.records if r.name == "gatehouse.audit"]  # type: ignore[attr-defined]


async def test_authentication_operations_are_audited_without_secrets(
    ctx: FlowContext, db: MemoryDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatehouse.audit")
    await registration.register(
        ctx, name="Ada", email="ada@example.com", password=PASSWORD, phone="+14155550123"
    )
    code = last_code(db, ctx.keyring, "ada@example.com")
    with pytest.raises(InvalidCode):
        await registration.verify(ctx, email="ada@example.com", otp=other_code(code))
    user = await registration.verify(ctx, email="ada@example.com", otp=code)
    with pytest.raises(InvalidCredentials):
        await login_flow.login(ctx, email="ada@example.com", password="wrong password!")
    opened = await login_flow.login(ctx, email="ada@example.com", password=PASSWORD)
    refreshed = await session.refresh(ctx, refresh_token=opened.refresh_token)
    with pytest.raises(InvalidToken):
        await session.refresh(ctx, refresh_token=opened.refresh_token)
    with pytest.raises(InvalidToken):
        await profile.read(ctx, token=refreshed.token)

    seen = [(a["action"], a["outcome"], a.get("factor"), a.get("reason")) for a in audits(caplog)]
    assert seen == [
        ("code.register", "failure", "otp", "mismatch"),
        ("code.register", "success", "otp", None),
        ("account.create", "success", "otp", None),
        ("login", "failure", "password", "wrong_password"),
        ("login", "success", "password", None),
        ("refresh", "success", "refresh_token", None),
        ("refresh", "failure", "refresh_token", "reuse_detected_family_revoked"),
        ("token", "failure", "access_token", "revoked"),
    ]
    assert audits(caplog)[4]["user_id"] == user["id"]
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    for line in lines:
        assert json.loads(line)["logger"] == "gatehouse.audit"
        for secret in (PASSWORD, code, opened.token, opened.refresh_token, "4155550123"):
            assert secret not in line
