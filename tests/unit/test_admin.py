"""Operator commands: signing-key rotation, data-key rotation with re-encryption, legacy import."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import pytest
from typer.testing import CliRunner

from gatehouse.bootstrap import Services, build
from gatehouse.config import Settings
from gatehouse.domain.crypto import generate_secrets_document, rotate_signing_keys
from gatehouse.domain.factors import TOTP_CONTEXT, TotpFactor
from gatehouse.domain.users import User
from gatehouse.entrypoints.cli import app
from gatehouse.selfservice.context import PHONE_CONTEXT
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.storage.migrate import upgrade

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/t.db")
    monkeypatch.setenv("GATEHOUSE_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("GATEHOUSE_ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("GATEHOUSE_ARGON2_TIME_COST", "1")
    (tmp_path / "secrets.json").write_text(json.dumps(generate_secrets_document()))
    return tmp_path


def services() -> Services:
    return build(Settings())


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(env: Path) -> None:
    before = services()
    token, _ = before.ctx.tokens.issue("u-1", "s-1", datetime.now(UTC))
    old_kid = before.ctx.tokens.jwks()["keys"][0]["kid"]
    result = runner.invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    after = services()
    assert after.ctx.tokens.verify(token, datetime.now(UTC)).sub == "u-1"
    kids = [k["kid"] for k in after.ctx.tokens.jwks()["keys"]]
    assert kids[0] == old_kid and len(kids) == 2
    fresh, _ = after.ctx.tokens.issue("u-1", "s-1", datetime.now(UTC))
    import jwt

    assert jwt.get_unverified_header(fresh)["kid"] == kids[1]
    doc = json.loads((env / "secrets.json").read_text())
    assert doc["signing_keys"][0]["retired_at"]
    assert oct((env / "secrets.json").stat().st_mode)[-3:] == "600"


def test_keys_retired_longer_than_a_token_lifetime_are_dropped() -> None:
    doc = generate_secrets_document()
    now = datetime.now(UTC)
    once = rotate_signing_keys(doc, now, timedelta(minutes=15))
    soon = rotate_signing_keys(once, now + timedelta(minutes=5), timedelta(minutes=15))
    assert len(soon["signing_keys"]) == 3
    later = rotate_signing_keys(soon, now + timedelta(minutes=30), timedelta(minutes=15))
    kids = [k["kid"] for k in later["signing_keys"]]
    assert doc["signing_keys"][0]["kid"] not in kids  # retired 30 min ago: nothing it signed lives
    assert len(kids) == 2


def test_rotate_data_reencrypts_every_phone_and_app_secret_and_resumes(env: Path) -> None:
    async def seed() -> str:
        svc = services()
        await upgrade(svc.engine)
        now = datetime.now(UTC)
        async with svc.ctx.uow() as uow:
            for i in range(7):
                phone = f"+1415555{i:04d}"
                await uow.users.add(
                    User(
                        id=f"u-{i}",
                        email=f"u{i}@example.com",
                        name="U",
                        password_hash="x",
                        created_at=now,
                        updated_at=now,
                        phone_ciphertext=svc.ctx.keyring.encrypt(phone, PHONE_CONTEXT),
                        phone_index=svc.ctx.blind_index("phone", phone),
                    )
                )
                if i < 4:  # and four authenticator apps, whose secrets are sealed alike
                    secret = f"SECRET{i}AAAAAAAAAAAAAAAAAAAAAAAAA"
                    sealed = svc.ctx.keyring.encrypt(secret, TOTP_CONTEXT)
                    await uow.factors.put_totp(TotpFactor(f"u-{i}", sealed, now, now, 0))
            await uow.commit()
        kid = svc.ctx.keyring.current_kid
        await svc.aclose()
        return kid

    old_kid = asyncio.run(seed())
    result = runner.invoke(app, ["keys", "rotate-data", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 11 rows" in result.output

    async def check() -> None:
        svc = services()
        assert svc.ctx.keyring.current_kid != old_kid
        async with svc.ctx.uow() as uow:
            for i in range(7):
                user = await uow.users.get(f"u-{i}")
                assert user is not None and user.phone_ciphertext is not None
                assert (
                    svc.ctx.keyring.key_id_of(user.phone_ciphertext) == svc.ctx.keyring.current_kid
                )
                assert (
                    svc.ctx.keyring.decrypt(user.phone_ciphertext, PHONE_CONTEXT)
                    == f"+1415555{i:04d}"
                )
                factor = await uow.factors.totp(f"u-{i}")
                if i < 4:
                    assert factor is not None
                    keyring = svc.ctx.keyring
                    assert keyring.key_id_of(factor.secret_ciphertext) == keyring.current_kid
                    secret = keyring.decrypt(factor.secret_ciphertext, TOTP_CONTEXT)
                    assert secret == f"SECRET{i}AAAAAAAAAAAAAAAAAAAAAAAAA"
        await svc.aclose()

    asyncio.run(check())
    again = runner.invoke(app, ["keys", "rotate-data", "--no-new-key"])
    assert "re-encrypted 0 rows" in again.output


def test_import_legacy_bcrypt_users_then_login_rehashes(env: Path) -> None:
    legacy = bcrypt.hashpw(b"legacy password 1", bcrypt.gensalt(rounds=4)).decode()
    legacy_2y = bcrypt.hashpw(b"legacy password 2", bcrypt.gensalt(rounds=4)).decode()
    legacy_2y = "$2y$" + legacy_2y[4:]
    (env / "users.csv").write_text(
        "email,name,password_hash,phone\n"
        f"One@Example.com,One,{legacy},+14155550100\n"
        f"two@example.com,Two,{legacy_2y},\n"
        "bad@example.com,Bad,md5:abc,\n"
        ",NoEmail,$2b$x,\n"
    )
    (env / "more.json").write_text(
        json.dumps([{"email": "one@example.com", "password_hash": legacy}])
    )
    asyncio.run(_migrate())
    result = runner.invoke(app, ["users", "import", str(env / "users.csv")])
    assert result.exit_code == 0, result.output
    assert "created 2, already present 0, invalid 2" in result.output
    again = runner.invoke(app, ["users", "import", str(env / "more.json")])
    assert "created 0, already present 1, invalid 0" in again.output

    async def login() -> None:
        svc = services()
        opened = await login_flow.login(
            svc.ctx, email="one@example.com", password="legacy password 1"
        )
        assert opened.user["phone"].startswith("+1415")
        await login_flow.login(svc.ctx, email="two@example.com", password="legacy password 2")
        async with svc.ctx.uow() as uow:
            user = await uow.users.get_by_email("one@example.com")
        assert user is not None and user.password_hash.startswith("$argon2id$")
        await svc.aclose()

    asyncio.run(login())


async def _migrate() -> None:
    svc = services()
    await upgrade(svc.engine)
    await svc.aclose()
