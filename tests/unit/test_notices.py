"""Security notices (DESIGN 3a): a sign-in from a new device and a password reset reach the
account's email through the outbox, in the change's transaction, and its live sockets."""

from __future__ import annotations

from gatehouse.courier.templates import TEXT_MAX, Templates
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.notices import WHAT
from gatehouse.selfservice.recovery import flow as recovery
from gatehouse.selfservice.registration import flow as registration
from tests.fakes import MemoryDatabase, MemoryNotifier

from .helpers import FakeClock, code_in, deliveries, last_code

PASSWORD = "correct horse battery staple"
PHONE = "+14155550123"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = "Mozilla/5.0 (Macintosh) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


async def verified(ctx: FlowContext, db: MemoryDatabase, email: str = "ada@example.com") -> str:
    await registration.register(ctx, name="Ada", email=email, password=PASSWORD, phone=PHONE)
    user = await registration.verify(ctx, email=email, otp=last_code(db, ctx.keyring, email))
    return str(user["id"])


def notices(db: MemoryDatabase) -> list[dict[str, object]]:
    return [m.payload for m in deliveries(db) if str(m.payload["template"]).startswith("security")]


def pushed(ctx: FlowContext, user_id: str) -> list[dict[str, object]]:
    assert isinstance(ctx.notifier, MemoryNotifier)
    return [
        p
        for room, event, p in ctx.notifier.sent
        if (room, event) == (f"user:{user_id}", "security.notice")
    ]


async def test_a_sign_in_from_a_new_device_is_told_to_the_owner_and_a_known_one_is_not(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    user_id = await verified(ctx, db)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=FIREFOX)
    assert notices(db) == [], "an account's first sign-in has no device to compare with"
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=FIREFOX)
    assert notices(db) == []
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=CHROME)
    [mail] = notices(db)
    assert (mail["channel"], mail["to"], mail["template"]) == (
        "email",
        "ada@example.com",
        "security-notice-device",
    )
    variables = mail["variables"]
    assert isinstance(variables, dict) and "Chrome" in variables["device"]
    assert [p["type"] for p in pushed(ctx, user_id)] == ["new_device"]
    subject, body = Templates().render(str(mail["template"]), variables)
    assert "New sign-in" in subject and WHAT["new_device"] in body
    # No link survives in the mail, though the device's description is the client's to choose.
    assert "http" not in body and "/" not in body.split("Device:")[1].splitlines()[0]
    # 90 days without it and Firefox is a new device again; a job's sign-in (no user agent) too.
    clock.advance(91 * 86_400)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=CHROME)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=FIREFOX)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD)
    assert len(notices(db)) == 1 + 3
    assert notices(db)[-1]["variables"]["device"] == "unnamed"  # type: ignore[index]


async def test_an_old_account_signing_in_after_90_days_of_silence_is_told(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    await verified(ctx, db)
    clock.advance(100 * 86_400)
    await login_flow.login(ctx, email="ada@example.com", password=PASSWORD, user_agent=FIREFOX)
    assert [n["template"] for n in notices(db)] == ["security-notice-device"]


async def test_a_reset_by_sms_is_told_to_the_account_email_before_its_sockets_close(
    ctx: FlowContext, db: MemoryDatabase
) -> None:
    user_id = await verified(ctx, db)
    await recovery.request(ctx, phone=PHONE, channel="sms")
    code = code_in(ctx.keyring, deliveries(db, "password-reset")[-1].payload)
    await recovery.reset(ctx, phone=PHONE, otp=code, new_password="another long passphrase")
    [mail] = notices(db)
    assert (mail["channel"], mail["to"], mail["template"]) == (
        "email",
        "ada@example.com",
        "security-notice",
    )
    assert "reset" in str(mail["variables"])
    assert isinstance(ctx.notifier, MemoryNotifier)
    events = [(room, event) for room, event, _ in ctx.notifier.sent]
    notice = events.index((f"user:{user_id}", "security.notice"))
    revoked = events.index((f"user:{user_id}", "session.revoked"))
    assert notice < revoked, "the page hears why before it is signed out"


def test_every_notice_sentence_reaches_the_mail_whole() -> None:
    assert all(len(sentence) <= TEXT_MAX for sentence in WHAT.values())
    for kind, sentence in WHAT.items():
        _subject, body = Templates().render("security-notice", {"what": sentence, "time": "now"})
        assert sentence in body, kind
