"""Authenticator apps and recovery codes (DESIGN 3b) on the test doubles: set-up, the second
step of a sign-in, replay, tries, step-up, and the job door."""

from __future__ import annotations

from datetime import datetime

import pyotp
import pytest

from gatehouse.domain import events
from gatehouse.errors import (
    Conflict,
    InvalidCode,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    NotFound,
    RateLimited,
    ReauthRequired,
)
from gatehouse.jobs.dispatch import handle_job
from gatehouse.jobs.results import at_rest
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.login import second
from gatehouse.selfservice.mfa import flow as mfa
from gatehouse.selfservice.mfa import proof
from gatehouse.selfservice.registration import flow as registration
from gatehouse.selfservice.sessions.flow import Session
from tests.fakes import MemoryDatabase

from .helpers import FakeClock, deliveries, last_code, user_events

PASSWORD = "correct horse battery staple"
EMAIL = "ada@example.com"


async def account(ctx: FlowContext, db: MemoryDatabase, email: str = EMAIL) -> Session:
    await registration.register(ctx, name="Ada", email=email, password=PASSWORD)
    await registration.verify(ctx, email=email, otp=last_code(db, ctx.keyring, email))
    opened = await login_flow.login(ctx, email=email, password=PASSWORD)
    assert isinstance(opened, Session)
    return opened


def code_at(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret).at(moment)


async def enrolled(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock, email: str = EMAIL
) -> tuple[Session, str, list[str]]:
    """An account with a confirmed app: its session, the app's secret, its recovery codes."""
    opened = await account(ctx, db, email)
    setup = await mfa.totp_setup(ctx, token=opened.token)
    confirmed = await mfa.totp_confirm(
        ctx, token=opened.token, code=code_at(setup["secret"], clock.now)
    )
    return opened, setup["secret"], confirmed["recovery_codes"]


async def challenged(ctx: FlowContext, email: str = EMAIL) -> second.MfaChallenge:
    answer = await login_flow.login(ctx, email=email, password=PASSWORD)
    assert isinstance(answer, second.MfaChallenge)
    return answer


async def test_setting_up_an_app_gives_a_secret_then_recovery_codes_and_tells_the_owner(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened = await account(ctx, db)
    setup = await mfa.totp_setup(ctx, token=opened.token)
    assert setup["otpauth_uri"].startswith("otpauth://totp/")
    assert f"secret={setup['secret']}" in setup["otpauth_uri"]
    assert setup["qr_svg"].startswith("<svg") and "http" not in setup["qr_svg"].split(">")[1]
    stored = db.tables.totp[opened.user["id"]]
    assert setup["secret"] not in stored.secret_ciphertext and stored.confirmed_at is None
    # Not a factor until confirmed: the password alone still signs in.
    assert isinstance(await login_flow.login(ctx, email=EMAIL, password=PASSWORD), Session)
    with pytest.raises(InvalidCode):
        await mfa.totp_confirm(ctx, token=opened.token, code="000000")
    done = await mfa.totp_confirm(ctx, token=opened.token, code=code_at(setup["secret"], clock.now))
    codes = done["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(code not in str(db.tables.recovery) for code in codes)  # stored as hashes
    assert user_events(db, events.MFA_ENABLED)[-1].payload["data"]["method"] == "totp"
    assert (
        deliveries(db, "security-notice")[-1]
        .payload["variables"]["what"]
        .startswith("An authenticator app")
    )
    with pytest.raises(Conflict):  # a confirmed app is never silently replaced
        await mfa.totp_setup(ctx, token=opened.token)


async def test_five_wrong_first_codes_throw_the_pending_secret_away(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened = await account(ctx, db)
    setup = await mfa.totp_setup(ctx, token=opened.token)
    for _ in range(4):
        with pytest.raises(InvalidCode):
            await mfa.totp_confirm(ctx, token=opened.token, code="123456")
    with pytest.raises(InvalidCode, match="set the authenticator app up again"):
        await mfa.totp_confirm(ctx, token=opened.token, code="123456")
    with pytest.raises(NotFound):
        await mfa.totp_confirm(ctx, token=opened.token, code=code_at(setup["secret"], clock.now))


async def test_a_password_login_needs_the_app_and_a_code_is_accepted_once(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    _opened, secret, _codes = await enrolled(ctx, db, clock)
    challenge = await challenged(ctx)
    assert challenge.methods == ("totp", "recovery_code") and challenge.expires_in == 300
    # The code that confirmed the set-up counts as used.
    with pytest.raises(InvalidCode):
        await second.finish(ctx, mfa_token=challenge.mfa_token, code=code_at(secret, clock.now))
    clock.advance(30)
    code = code_at(secret, clock.now)
    session = await second.finish(ctx, mfa_token=challenge.mfa_token, code=code)
    claims = ctx.tokens.verify(session.token, clock.now)
    assert (claims.aal, tuple(claims.amr)) == (2, ("pwd", "otp", "mfa"))
    assert db.tables.sessions[claims.sid].aal == 2
    # The token was spent, and the code too, even with a new token.
    with pytest.raises(InvalidToken):
        await second.finish(ctx, mfa_token=challenge.mfa_token, code=code)
    with pytest.raises(InvalidCode):
        await second.finish(ctx, mfa_token=(await challenged(ctx)).mfa_token, code=code)
    logged_in = user_events(db, events.LOGGED_IN)[-1].payload["data"]
    assert logged_in["factor"] == "totp"


async def test_five_wrong_factors_end_the_token_and_count_as_failed_sign_ins(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    _opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(60)
    challenge = await challenged(ctx)
    for n in range(4):
        with pytest.raises(InvalidCode):
            await second.finish(ctx, mfa_token=challenge.mfa_token, code=f"{n:06d}")
        clock.advance(1)
    with pytest.raises(InvalidToken):  # the fifth wrong try ends it
        await second.finish(ctx, mfa_token=challenge.mfa_token, code="999999")
    failures, _ = await ctx.failures.get(ctx.blind_index("login", EMAIL), clock.now.timestamp())
    assert failures == 5
    with pytest.raises(RateLimited):  # five failed sign-ins: the account's throttle holds
        await second.finish(ctx, mfa_token=challenge.mfa_token, code=code_at(secret, clock.now))
    clock.advance(61)
    with pytest.raises(InvalidToken):  # and the right code cannot revive the token
        await second.finish(ctx, mfa_token=challenge.mfa_token, code=code_at(secret, clock.now))


async def test_recovery_codes_sign_in_once_each_and_are_told_to_the_owner(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened, _secret, codes = await enrolled(ctx, db, clock)
    session = await second.finish(
        ctx, mfa_token=(await challenged(ctx)).mfa_token, recovery_code=codes[0].upper()
    )
    assert ctx.tokens.verify(session.token, clock.now).aal == 2
    with pytest.raises(InvalidCode):
        await second.finish(
            ctx, mfa_token=(await challenged(ctx)).mfa_token, recovery_code=codes[0]
        )
    notices = [d.payload["variables"]["what"] for d in deliveries(db, "security-notice")]
    assert any("recovery code was used" in n for n in notices)
    status = await mfa.methods_of(ctx, token=opened.token)
    assert status == {"totp": True, "passkeys": False, "recovery_codes_left": 9}
    renewed = await mfa.replace_recovery_codes(ctx, token=opened.token)
    with pytest.raises(InvalidCode):  # the old set is gone
        await second.finish(
            ctx, mfa_token=(await challenged(ctx)).mfa_token, recovery_code=codes[1]
        )
    assert len(renewed["recovery_codes"]) == 10


async def test_a_token_of_one_account_cannot_finish_another_s_sign_in(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    await enrolled(ctx, db, clock, "ada@example.com")
    _b, secret_b, _ = await enrolled(ctx, db, clock, "bob@example.com")
    clock.advance(30)
    token_a = (await challenged(ctx, "ada@example.com")).mfa_token
    nonce, _user, expiry, mac = token_a.split(".")
    bob_id = next(u.id for u in db.tables.users.values() if u.email == "bob@example.com")
    forged = ".".join((nonce, bob_id, expiry, mac))
    with pytest.raises(InvalidToken):
        await second.finish(ctx, mfa_token=forged, code=code_at(secret_b, clock.now))
    with pytest.raises(InvalidToken):  # Bob's code is no code of Ada's... and Ada's token
        await second.finish(ctx, mfa_token=token_a + "x", code=code_at(secret_b, clock.now))
    with pytest.raises(InvalidCode):
        await second.finish(ctx, mfa_token=token_a, code=code_at(secret_b, clock.now))


async def test_wrong_passwords_answer_alike_with_or_without_a_second_factor(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    await enrolled(ctx, db, clock, "ada@example.com")
    await account(ctx, db, "bob@example.com")
    for email in ("ada@example.com", "bob@example.com", "nobody@example.com"):
        with pytest.raises(InvalidCredentials) as refused:
            await login_flow.login(ctx, email=email, password="not the password")
        assert refused.value.message == "Invalid email or password"


async def test_removing_the_app_needs_presence_and_takes_the_recovery_codes(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(301)
    with pytest.raises(ReauthRequired):
        await mfa.totp_remove(ctx, token=opened.token)
    with pytest.raises(InvalidInput):  # the password alone is not enough with an app
        await mfa.totp_remove(ctx, token=opened.token, current_password=PASSWORD)
    await mfa.totp_remove(
        ctx, token=opened.token, current_password=PASSWORD, code=code_at(secret, clock.now)
    )
    assert db.tables.totp == {} and db.tables.recovery == {}
    assert user_events(db, events.MFA_DISABLED)
    assert isinstance(await login_flow.login(ctx, email=EMAIL, password=PASSWORD), Session)


async def test_reauth_of_an_account_with_an_app_needs_its_code(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(301)
    with pytest.raises(InvalidInput):
        await proof.reauth(ctx, token=opened.token, password=PASSWORD)
    with pytest.raises(InvalidCode):
        await proof.reauth(ctx, token=opened.token, password=PASSWORD, code="000000")
    renewed = await proof.reauth(
        ctx, token=opened.token, password=PASSWORD, code=code_at(secret, clock.now)
    )
    assert ctx.tokens.verify(renewed["token"], clock.now).auth_time == clock.now


async def test_the_job_door_answers_mfa_required_and_finishes_with_a_code(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    _opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(30)
    first = await handle_job(
        ctx, "verify-user", "verify-user", {"email": EMAIL, "password": PASSWORD}
    )
    assert first["success"] and first["data"]["mfa_required"] is True
    assert at_rest(first)["data"]["mfa_token"] == "[redacted]"
    done = await handle_job(
        ctx,
        "verify-user",
        "verify-user",
        {"mfa_token": first["data"]["mfa_token"], "code": code_at(secret, clock.now)},
    )
    assert done["success"] and done["data"]["token"], done
    refused = await handle_job(ctx, "verify-user", "verify-user", {"email": EMAIL})
    assert refused["success"] is False and refused["code"] == "invalid_input"


async def test_the_mfa_queue_sets_an_app_up_and_keeps_no_secret_at_rest(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    opened = await account(ctx, db)
    setup = await handle_job(ctx, "mfa", "totp-setup", {"token": opened.token})
    assert setup["success"], setup
    kept = at_rest(setup)["data"]
    assert setup["data"]["secret"] not in str(kept)
    code = code_at(setup["data"]["secret"], clock.now)
    confirmed = await handle_job(ctx, "mfa", "totp-confirm", {"token": opened.token, "code": code})
    assert confirmed["success"] and len(confirmed["data"]["recovery_codes"]) == 10
    assert confirmed["data"]["recovery_codes"][0] not in str(at_rest(confirmed))
    unknown = await handle_job(ctx, "mfa", "nope", {"token": opened.token})
    assert unknown["success"] is False


async def test_wrong_step_up_codes_count_as_failed_sign_ins_of_the_account(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    """A stolen access token and a guessed password cannot brute-force the second factor
    through a step-up: each wrong code counts in the account's sign-in throttle."""
    opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(301)
    for n in range(5):
        with pytest.raises(InvalidCode):
            await proof.reauth(ctx, token=opened.token, password=PASSWORD, code=f"{n:06d}")
    with pytest.raises(RateLimited):
        await proof.reauth(
            ctx, token=opened.token, password=PASSWORD, code=code_at(secret, clock.now)
        )
    with pytest.raises(RateLimited):  # and the password sign-in meets the same throttle
        await login_flow.login(ctx, email=EMAIL, password=PASSWORD)


async def test_a_known_password_buys_no_fresh_tries_at_the_code(
    ctx: FlowContext, db: MemoryDatabase, clock: FakeClock
) -> None:
    """A thief who has the password: five wrong codes hold the account's throttle, and the right
    password after the wait does not reset the count (only a right second factor does)."""
    _opened, secret, _codes = await enrolled(ctx, db, clock)
    clock.advance(30)
    token = (await challenged(ctx)).mfa_token
    for n in range(4):
        with pytest.raises(InvalidCode):
            await second.finish(ctx, mfa_token=token, code=f"{n:06d}")
    with pytest.raises(InvalidToken):
        await second.finish(ctx, mfa_token=token, code="999999")
    clock.advance(61)  # the first wait (1 minute) is over
    token = (await challenged(ctx)).mfa_token  # the password is right...
    with pytest.raises(InvalidCode):
        await second.finish(ctx, mfa_token=token, code="888888")
    key = ctx.blind_index("login", EMAIL)
    failures, _ = await ctx.failures.get(key, clock.now.timestamp())
    assert failures == 6  # ...and the count went on
    with pytest.raises(RateLimited):  # the next wait (2 minutes) holds
        await second.finish(ctx, mfa_token=token, code=code_at(secret, clock.now))
    clock.advance(121)
    await second.finish(ctx, mfa_token=token, code=code_at(secret, clock.now))
    assert (await ctx.failures.get(key, clock.now.timestamp()))[0] == 0
