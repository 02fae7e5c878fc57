"""Passkeys (DESIGN 3b) with a software authenticator (tests/softauthn.py): registration, list,
removal, passwordless sign-in and the assertion the second step and reauth use, on the test
doubles; then the same through the HTTP app. Every check of the ceremony is made to fail alone:
a spent, expired or foreign flow, another origin or relying party, no user verification, a
counter going back, a credential of another account."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gatehouse.domain import events
from gatehouse.errors import (
    Conflict,
    InvalidCode,
    InvalidCredentials,
    NotFound,
    RateLimited,
    ReauthRequired,
)
from gatehouse.security.ratelimit import LimitsRateLimiter
from gatehouse.selfservice.context import FlowContext, RelyingParty
from gatehouse.selfservice.login import flow as login_flow
from gatehouse.selfservice.passkeys import flow as passkeys
from gatehouse.selfservice.sessions.flow import Session
from tests.fakes import MemoryDatabase, MemoryNotifier
from tests.softauthn import UP, UV, SoftAuthenticator, b64url

from .api_client import Api
from .helpers import FakeClock, deliveries, offline_settings, user_events
from .test_flows_session import EMAIL, PASSWORD, Account, make_account

BOB = "bob@example.com"


async def token_of(ctx: FlowContext, email: str = EMAIL) -> str:
    opened = await login_flow.login(ctx, email=email, password=PASSWORD, user_agent="Firefox")
    assert isinstance(opened, Session)
    return opened.token


async def enrolled(
    ctx: FlowContext, token: str, device: SoftAuthenticator, name: str | None = None
) -> dict[str, Any]:
    started = await passkeys.registration_options(ctx, token=token)
    answer = device.create(started["options"])
    passkey, _codes = await passkeys.register(
        ctx, token=token, flow_id=started["flow_id"], credential=answer, name=name
    )
    return passkey


async def passwordless(ctx: FlowContext, device: SoftAuthenticator, **how: Any) -> Session:
    started = await passkeys.assertion_options(ctx, user_id=None)
    answer = device.get(started["options"], **how)
    return await passkeys.sign_in(
        ctx, flow_id=started["flow_id"], credential=answer, user_agent="Safari"
    )


@pytest.fixture
async def account(ctx: FlowContext, db: MemoryDatabase) -> Account:
    return await make_account(ctx, db)


@pytest.fixture
async def token(ctx: FlowContext, account: Account) -> str:
    return await token_of(ctx)


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator()


class TestRegistration:
    async def test_options_ask_for_a_discoverable_verified_credential(
        self, ctx: FlowContext, account: Account, token: str, device: SoftAuthenticator
    ) -> None:
        first = await enrolled(ctx, token, device)
        started = await passkeys.registration_options(ctx, token=token)
        options = started["options"]
        assert options["rp"] == {"id": "localhost", "name": "Gatehouse"}
        assert options["user"]["id"] == b64url(account.id.encode())  # our id, never the email
        assert options["authenticatorSelection"]["residentKey"] == "required"
        assert options["authenticatorSelection"]["userVerification"] == "required"
        assert options["attestation"] == "none" and options["timeout"] == 300_000
        [excluded] = options["excludeCredentials"]
        assert excluded["id"] == b64url(next(iter(device.credentials)))
        assert excluded["transports"] == ["internal", "hybrid"]
        assert first["name"] == "Passkey" and first["last_used_at"] is None

    async def test_register_list_event_and_notice(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        added = await enrolled(ctx, token, SoftAuthenticator(), name="  Ada's phone ")
        assert added["name"] == "Ada's phone"
        assert await passkeys.list_passkeys(ctx, token=token) == [added]
        [stored] = db.tables.passkeys.values()
        assert (stored.user_id, stored.sign_count, stored.transports) == (
            account.id,
            0,
            "internal,hybrid",
        )
        [event] = user_events(db, events.PASSKEY_ADDED)
        assert event.payload["data"] == {"user_id": account.id, "passkey_id": added["id"]}
        [notice] = deliveries(db, "security-notice")
        assert "passkey was added" in notice.payload["variables"]["what"]
        assert isinstance(ctx.notifier, MemoryNotifier)
        assert [(r, e) for r, e, _ in ctx.notifier.sent] == [
            (f"user:{account.id}", "security.notice")
        ]

    async def test_needs_a_recent_authentication(
        self, ctx: FlowContext, account: Account, token: str, clock: FakeClock
    ) -> None:
        clock.advance(301)
        with pytest.raises(ReauthRequired):
            await passkeys.registration_options(ctx, token=token)

    @pytest.mark.parametrize(
        "wrong",
        [{"origin": "https://evil.example"}, {"rp_id": "evil.example"}, {"flags": UP | 0x40}],
        ids=["origin", "rp_id", "no_user_verification"],
    )
    async def test_a_wrong_answer_is_refused_and_spends_the_flow(
        self,
        ctx: FlowContext,
        db: MemoryDatabase,
        account: Account,
        token: str,
        wrong: dict[str, Any],
    ) -> None:
        started = await passkeys.registration_options(ctx, token=token)
        device = SoftAuthenticator()
        with pytest.raises(InvalidCode):
            await passkeys.register(
                ctx,
                token=token,
                flow_id=started["flow_id"],
                credential=device.create(started["options"], **wrong),
                name=None,
            )
        with pytest.raises(InvalidCode):  # the right answer now comes too late
            await passkeys.register(
                ctx,
                token=token,
                flow_id=started["flow_id"],
                credential=SoftAuthenticator().create(started["options"]),
                name=None,
            )
        assert not db.tables.passkeys

    async def test_a_flow_is_single_use_and_lives_five_minutes(
        self, ctx: FlowContext, account: Account, token: str, clock: FakeClock
    ) -> None:
        started = await passkeys.registration_options(ctx, token=token)
        answer = SoftAuthenticator().create(started["options"])
        flow_id = started["flow_id"]
        await passkeys.register(ctx, token=token, flow_id=flow_id, credential=answer, name=None)
        with pytest.raises(InvalidCode):
            await passkeys.register(ctx, token=token, flow_id=flow_id, credential=answer, name=None)
        late = await passkeys.registration_options(ctx, token=token)
        clock.advance(301)
        answer = SoftAuthenticator().create(late["options"])
        with pytest.raises(InvalidCode):  # the token is still good (15 minutes): the flow is not
            await passkeys.register(
                ctx, token=token, flow_id=late["flow_id"], credential=answer, name=None
            )

    async def test_another_users_flow_is_refused(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        await make_account(ctx, db, BOB)
        bobs = await token_of(ctx, BOB)
        started = await passkeys.registration_options(ctx, token=token)
        answer = SoftAuthenticator().create(started["options"])
        with pytest.raises(InvalidCode):
            await passkeys.register(
                ctx, token=bobs, flow_id=started["flow_id"], credential=answer, name=None
            )
        with pytest.raises(InvalidCode):  # and it is spent for its owner too
            await passkeys.register(
                ctx, token=token, flow_id=started["flow_id"], credential=answer, name=None
            )

    async def test_a_known_credential_is_a_conflict(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        await make_account(ctx, db, BOB)
        bobs = await token_of(ctx, BOB)
        started = await passkeys.registration_options(ctx, token=bobs)
        [known] = device.credentials
        forged = device.create(started["options"], reuse=b64url(known))
        with pytest.raises(Conflict):
            await passkeys.register(
                ctx, token=bobs, flow_id=started["flow_id"], credential=forged, name=None
            )
        assert len(db.tables.passkeys) == 1

    @pytest.mark.parametrize(
        "credential",
        [{}, {"id": "x", "rawId": "x", "type": "public-key", "response": {"clientDataJSON": 1}}],
    )
    async def test_malformed_answers_are_refused_not_errors(
        self, ctx: FlowContext, account: Account, token: str, credential: dict[str, Any]
    ) -> None:
        started = await passkeys.registration_options(ctx, token=token)
        with pytest.raises(InvalidCode):
            await passkeys.register(
                ctx, token=token, flow_id=started["flow_id"], credential=credential, name=None
            )


class TestRemoval:
    async def test_remove_needs_recent_auth_and_is_the_owners_only(
        self,
        ctx: FlowContext,
        db: MemoryDatabase,
        account: Account,
        token: str,
        clock: FakeClock,
    ) -> None:
        added = await enrolled(ctx, token, SoftAuthenticator())
        await make_account(ctx, db, BOB)
        bobs = await token_of(ctx, BOB)
        with pytest.raises(NotFound):
            await passkeys.remove(ctx, token=bobs, passkey_id=added["id"])
        with pytest.raises(NotFound):
            await passkeys.remove(ctx, token=token, passkey_id="no-such-passkey")
        clock.advance(301)
        with pytest.raises(ReauthRequired):
            await passkeys.remove(ctx, token=token, passkey_id=added["id"])
        clock.advance(-301)
        assert await passkeys.remove(ctx, token=token, passkey_id=added["id"]) == account.id
        assert not db.tables.passkeys
        [event] = user_events(db, events.PASSKEY_REMOVED)
        assert event.payload["data"]["passkey_id"] == added["id"]
        assert (
            "passkey was removed"
            in deliveries(db, "security-notice")[-1].payload["variables"]["what"]
        )


class TestPasswordless:
    async def test_sign_in_is_two_factors_at_once(
        self,
        ctx: FlowContext,
        db: MemoryDatabase,
        account: Account,
        token: str,
        device: SoftAuthenticator,
        clock: FakeClock,
    ) -> None:
        added = await enrolled(ctx, token, device)
        clock.advance(60)
        started = await passkeys.assertion_options(ctx, user_id=None)
        assert (
            "allowCredentials" not in started["options"]
            or not started["options"]["allowCredentials"]
        )
        assert started["options"]["userVerification"] == "required"
        answer = device.get(started["options"])
        opened = await passkeys.sign_in(ctx, flow_id=started["flow_id"], credential=answer)
        claims = ctx.tokens.verify(opened.token, clock.now)
        assert (claims.sub, claims.amr, claims.aal) == (account.id, ("hwk", "user"), 2)
        assert db.tables.sessions[claims.sid].amr == ("hwk", "user")
        assert opened.as_data()["user"]["email"] == EMAIL
        stored = db.tables.passkeys[added["id"]]
        assert (stored.sign_count, stored.last_used_at) == (1, clock.now)
        [event] = [
            e
            for e in user_events(db, events.LOGGED_IN)
            if e.payload["data"]["factor"] != "password"
        ]
        assert event.payload["data"] == {"user_id": account.id, "factor": "passkey"}
        [listed] = await passkeys.list_passkeys(ctx, token=token)
        assert listed["last_used_at"] == clock.now.isoformat()

    async def test_a_new_device_gets_its_notice(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        await passwordless(ctx, device)  # "Safari": the account has only seen "Firefox"
        assert [n.payload["variables"]["device"] for n in deliveries(db, "security-notice-device")][
            -1
        ] == "Safari"

    async def test_replayed_and_expired_flows_are_refused(
        self, ctx: FlowContext, account: Account, token: str, clock: FakeClock
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        started = await passkeys.assertion_options(ctx, user_id=None)
        answer = device.get(started["options"])
        await passkeys.sign_in(ctx, flow_id=started["flow_id"], credential=answer)
        with pytest.raises(InvalidCredentials):
            await passkeys.sign_in(ctx, flow_id=started["flow_id"], credential=answer)
        with pytest.raises(InvalidCredentials):  # a fresh signature on the spent flow
            again = device.get(started["options"])
            await passkeys.sign_in(ctx, flow_id=started["flow_id"], credential=again)
        late = await passkeys.assertion_options(ctx, user_id=None)
        clock.advance(301)
        with pytest.raises(InvalidCredentials):
            late_answer = device.get(late["options"])
            await passkeys.sign_in(ctx, flow_id=late["flow_id"], credential=late_answer)

    @pytest.mark.parametrize(
        "wrong",
        [
            {"origin": "https://evil.example"},
            {"origin": "http://localhost:8001"},
            {"rp_id": "evil.example"},
            {"flags": UP},
            {"flags": UV},
            {"user_handle": b"someone-else"},
        ],
        ids=["origin", "port", "rp_id", "no_user_verification", "no_presence", "user_handle"],
    )
    async def test_a_wrong_assertion_is_refused(
        self, ctx: FlowContext, account: Account, token: str, wrong: dict[str, Any]
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        with pytest.raises(InvalidCredentials, match="The passkey was not accepted"):
            await passwordless(ctx, device, **wrong)
        await passwordless(ctx, device)  # the passkey itself still works

    async def test_the_counter_must_go_forward(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        await passwordless(ctx, device, sign_count=5)
        for behind in (5, 4, 0):
            with pytest.raises(InvalidCredentials):
                await passwordless(ctx, device, sign_count=behind)
        await passwordless(ctx, device, sign_count=6)

    async def test_a_counter_overtaken_between_check_and_write_is_refused(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        flows = [await passkeys.assertion_options(ctx, user_id=None) for _ in range(2)]
        ahead = device.get(flows[0]["options"], sign_count=7)
        behind = device.get(flows[1]["options"], sign_count=6)
        # Both checked against the stored counter (0) before either is written: a race.
        won = await passkeys._prove(ctx, flows[0]["flow_id"], ahead, None, "login")
        lost = await passkeys._prove(ctx, flows[1]["flow_id"], behind, None, "login")
        async with ctx.uow() as uow:
            await passkeys._record_use(ctx, uow, *won, "login")
            await uow.commit()
        with pytest.raises(InvalidCredentials):
            async with ctx.uow() as uow:
                await passkeys._record_use(ctx, uow, *lost, "login")

    async def test_an_authenticator_without_a_counter_signs_in_again(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator(counter_step=0)
        await enrolled(ctx, token, device)
        await passwordless(ctx, device)
        await passwordless(ctx, device)

    async def test_an_unknown_credential_is_refused_like_a_wrong_password(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        stranger = SoftAuthenticator()
        started = await passkeys.assertion_options(ctx, user_id=None)
        stranger.create({**started["options"], "rp": {"id": "localhost"}, "user": {"id": "AA"}})
        with pytest.raises(InvalidCredentials, match="The passkey was not accepted"):
            await passkeys.sign_in(
                ctx, flow_id=started["flow_id"], credential=stranger.get(started["options"])
            )

    async def test_the_account_limit_applies(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        device = SoftAuthenticator()
        await enrolled(ctx, token, device)
        limited = replace(ctx, limiter=LimitsRateLimiter({"passkey_login_account": "2/minute"}))
        await passwordless(limited, device)
        await passwordless(limited, device)
        with pytest.raises(RateLimited):
            await passwordless(limited, device)

    async def test_relying_party_comes_from_the_context(
        self, ctx: FlowContext, account: Account, token: str
    ) -> None:
        rp = RelyingParty(id="example.com", name="Ex", origins=("https://auth.example.com",))
        other = replace(ctx, relying_party=rp)
        device = SoftAuthenticator("https://auth.example.com")
        added = await enrolled(other, token, device)
        await passwordless(other, device)
        with pytest.raises(InvalidCredentials):  # a passkey of example.com is none of localhost's
            made_there = b64url(next(iter(device.credentials)))
            await passwordless(ctx, device, rp_id="example.com", credential_id=made_there)
        assert added["name"] == "Passkey"


class TestBoundAssertions:
    """`assertion_options` / `verify_assertion`: the second step of a sign-in, and reauth."""

    async def test_bound_flow_lists_the_accounts_passkeys_and_records_the_use(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str, clock: FakeClock
    ) -> None:
        device = SoftAuthenticator()
        added = await enrolled(ctx, token, device)
        started = await passkeys.assertion_options(ctx, user_id=account.id)
        [allowed] = started["options"]["allowCredentials"]
        assert allowed["id"] == db.tables.passkeys[added["id"]].credential_id
        assert started["flow_id"].startswith("a.")
        user, used = await passkeys.verify_assertion(
            ctx,
            flow_id=started["flow_id"],
            credential=device.get(started["options"]),
            user_id=account.id,
        )
        assert (user.id, used.id, used.sign_count, used.last_used_at) == (
            account.id,
            added["id"],
            1,
            clock.now,
        )
        assert db.tables.passkeys[added["id"]] == used

    async def test_an_account_without_passkeys_gets_no_options(
        self, ctx: FlowContext, account: Account
    ) -> None:
        with pytest.raises(NotFound):
            await passkeys.assertion_options(ctx, user_id=account.id)

    async def test_a_flow_bound_to_one_account_is_refused_for_another(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        bob = await make_account(ctx, db, BOB)
        bobs_device, adas_device = SoftAuthenticator(), SoftAuthenticator()
        await enrolled(ctx, await token_of(ctx, BOB), bobs_device)
        await enrolled(ctx, token, adas_device)
        adas = await passkeys.assertion_options(ctx, user_id=account.id)
        answer = adas_device.get(adas["options"])
        with pytest.raises(InvalidCredentials):
            await passkeys.verify_assertion(
                ctx, flow_id=adas["flow_id"], credential=answer, user_id=bob.id
            )
        with pytest.raises(InvalidCredentials):  # spent by that try
            await passkeys.verify_assertion(
                ctx, flow_id=adas["flow_id"], credential=answer, user_id=account.id
            )
        bound = await passkeys.assertion_options(ctx, user_id=account.id)
        with pytest.raises(InvalidCredentials):  # nor used for a passwordless sign-in
            await passkeys.sign_in(
                ctx, flow_id=bound["flow_id"], credential=adas_device.get(bound["options"])
            )

    async def test_a_credential_of_one_account_cannot_sign_in_as_another(
        self, ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
    ) -> None:
        bob = await make_account(ctx, db, BOB)
        await enrolled(ctx, await token_of(ctx, BOB), SoftAuthenticator())
        adas_device = SoftAuthenticator()
        await enrolled(ctx, token, adas_device)
        bobs = await passkeys.assertion_options(ctx, user_id=bob.id)
        [adas_credential] = adas_device.credentials
        answer = adas_device.get(bobs["options"], credential_id=b64url(adas_credential))
        with pytest.raises(InvalidCredentials):
            await passkeys.verify_assertion(
                ctx, flow_id=bobs["flow_id"], credential=answer, user_id=bob.id
            )
        # An open flow (reauth's) checked for Bob: Ada's passkey is still not Bob's.
        open_flow = await passkeys.assertion_options(ctx, user_id=None)
        with pytest.raises(InvalidCredentials):
            await passkeys.verify_assertion(
                ctx,
                flow_id=open_flow["flow_id"],
                credential=adas_device.get(open_flow["options"], user_handle=bob.id.encode()),
                user_id=bob.id,
            )
        reauth = await passkeys.assertion_options(ctx, user_id=None)
        user, _used = await passkeys.verify_assertion(
            ctx,
            flow_id=reauth["flow_id"],
            credential=adas_device.get(reauth["options"]),
            user_id=account.id,
        )
        assert user.id == account.id


# --- through the HTTP app -----------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def http_enrolled(api: Api, token: str, device: SoftAuthenticator) -> dict[str, Any]:
    started = await api.client.post("/api/auth/passkeys/register/options", headers=bearer(token))
    assert started.status_code == 200, started.text
    data = started.json()["data"]
    body = {"flow_id": data["flow_id"], "credential": device.create(data["options"]), "name": "K"}
    answer = await api.client.post(
        "/api/auth/passkeys/register/verify", json=body, headers=bearer(token)
    )
    assert answer.status_code == 201, answer.text
    passkey: dict[str, Any] = answer.json()["data"]["passkey"]
    return passkey


async def http_passwordless(api: Api, device: SoftAuthenticator, **how: Any) -> Any:
    started = await api.post("/api/auth/passkeys/login/options", {})
    assert started.status_code == 200, started.text
    data = started.json()["data"]
    body = {"flow_id": data["flow_id"], "credential": device.get(data["options"], **how)}
    return await api.post("/api/auth/passkeys/login/verify", body)


async def test_http_register_list_sign_in_and_remove(api: Api) -> None:
    await api.signed_up()
    token = (await api.logged_in())["token"]
    device = SoftAuthenticator()
    added = await http_enrolled(api, token, device)
    assert set(added) == {"id", "name", "created_at", "last_used_at"} and added["name"] == "K"
    listed = await api.client.get("/api/auth/passkeys", headers=bearer(token))
    assert listed.json()["data"] == {"passkeys": [added]}

    signed_in = await http_passwordless(api, device)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["message"] == "Logged in successfully"
    data = signed_in.json()["data"]
    assert set(data) == {"token", "refresh_token", "token_type", "expires_in", "user"}
    claims = api.services.ctx.tokens.verify(data["token"], api.clock.now)
    assert (claims.amr, claims.aal) == (("hwk", "user"), 2)

    refused = await http_passwordless(api, device, origin="https://evil.example")
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_credentials"

    api.clock.advance(301)
    path = f"/api/auth/passkeys/{added['id']}"
    stale = await api.client.delete(path, headers=bearer(token))
    assert stale.status_code == 403 and stale.json()["code"] == "reauth_required"
    fresh = (await http_passwordless(api, device)).json()["data"]["token"]
    assert (await api.client.delete(path, headers=bearer(fresh))).status_code == 200
    assert (await api.client.delete(path, headers=bearer(fresh))).status_code == 404


async def test_http_reauth_with_a_passkey_makes_a_removal_recent(api: Api) -> None:
    await api.signed_up()
    token = (await api.logged_in())["token"]
    device = SoftAuthenticator()
    added = await http_enrolled(api, token, device)
    api.clock.advance(301)
    started = (await api.post("/api/auth/passkeys/login/options", {})).json()["data"]
    body = {"flow_id": started["flow_id"], "credential": device.get(started["options"])}
    renewed = await api.client.post("/api/auth/reauth", json=body, headers=bearer(token))
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()["data"]["token"]
    removed = await api.client.delete(f"/api/auth/passkeys/{added['id']}", headers=bearer(fresh))
    assert removed.status_code == 200, removed.text


async def test_http_refusals(api: Api) -> None:
    await api.signed_up()
    token = (await api.logged_in())["token"]
    started = await api.client.post("/api/auth/passkeys/register/options", headers=bearer(token))
    data = started.json()["data"]
    wrong = SoftAuthenticator().create(data["options"], origin="https://evil.example")
    answer = await api.client.post(
        "/api/auth/passkeys/register/verify",
        json={"flow_id": data["flow_id"], "credential": wrong},
        headers=bearer(token),
    )
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_code"
    await api.signed_up("bob@example.com")
    bobs = (await api.logged_in("bob@example.com"))["token"]
    adas = await http_enrolled(api, token, SoftAuthenticator())
    other = await api.client.delete(f"/api/auth/passkeys/{adas['id']}", headers=bearer(bobs))
    assert other.status_code == 404
    unsigned = await api.post("/api/auth/passkeys/login/verify", {"flow_id": "o.x"})
    assert unsigned.status_code == 422
    no_token = await api.client.post("/api/auth/passkeys/register/options")
    assert no_token.status_code == 401


async def test_http_second_step_of_a_password_sign_in(api: Api) -> None:
    await api.signed_up()
    token = (await api.logged_in())["token"]
    device = SoftAuthenticator()
    await http_enrolled(api, token, device)
    first = await api.post(
        "/api/auth/login", {"email": "ada@example.com", "password": "correct horse battery"}
    )
    mfa_token = first.json()["data"]["mfa_token"]
    started = await api.post("/api/auth/passkeys/login/options", {"mfa_token": mfa_token})
    assert started.status_code == 200, started.text
    data = started.json()["data"]
    assert len(data["options"]["allowCredentials"]) == 1
    finished = await api.post(
        "/api/auth/login/mfa",
        {
            "mfa_token": mfa_token,
            "flow_id": data["flow_id"],
            "credential": device.get(data["options"]),
        },
    )
    assert finished.status_code == 200, finished.text
    claims = api.services.ctx.tokens.verify(finished.json()["data"]["token"], api.clock.now)
    assert claims.aal == 2
    forged = await api.post("/api/auth/passkeys/login/options", {"mfa_token": "a.b.c.d"})
    assert forged.status_code == 401


async def test_openapi_documents_the_passkey_routes(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/auth/passkeys",
        "/api/auth/passkeys/{passkey_id}",
        "/api/auth/passkeys/register/options",
        "/api/auth/passkeys/register/verify",
        "/api/auth/passkeys/login/options",
        "/api/auth/passkeys/login/verify",
    ):
        assert path in paths, path


def test_the_relying_party_defaults_to_the_public_url(tmp_path: Path) -> None:
    default = offline_settings(tmp_path)
    assert (default.webauthn_rp_id, default.webauthn_origins) == (
        "localhost",
        ["http://localhost:8000"],
    )
    public = offline_settings(tmp_path, public_url="https://Auth.Example.com:443/app")
    assert (public.webauthn_rp_id, public.webauthn_origins) == (
        "auth.example.com",
        ["https://auth.example.com"],
    )
    wider = offline_settings(
        tmp_path,
        public_url="https://auth.example.com",
        webauthn_rp_id="example.com",
        webauthn_origins=["https://App.example.com:8443/", "android:apk-key-hash:abc"],
    )
    assert wider.webauthn_origins == ["https://app.example.com:8443", "android:apk-key-hash:abc"]
    with pytest.raises(RuntimeError, match=r"not on example\.com"):
        offline_settings(tmp_path, webauthn_rp_id="example.com")  # localhost:8000 is not on it
    with pytest.raises(RuntimeError, match="GATEHOUSE_PUBLIC_URL"):
        offline_settings(tmp_path, public_url="auth.example.com")


async def test_bootstrap_hands_the_relying_party_to_the_flows(api: Api) -> None:
    assert api.services.ctx.relying_party == RelyingParty(
        "localhost", "Gatehouse", ("http://localhost:8000",)
    )


async def test_the_first_passkey_brings_recovery_codes_and_the_last_takes_them(
    ctx: FlowContext, db: MemoryDatabase, account: Account, token: str
) -> None:
    started = await passkeys.registration_options(ctx, token=token)
    device = SoftAuthenticator()
    first, codes = await passkeys.register(
        ctx,
        token=token,
        flow_id=started["flow_id"],
        credential=device.create(started["options"]),
        name=None,
    )
    assert codes is not None and len(codes) == 10
    started = await passkeys.registration_options(ctx, token=token)
    _second, more = await passkeys.register(
        ctx,
        token=token,
        flow_id=started["flow_id"],
        credential=SoftAuthenticator().create(started["options"]),
        name=None,
    )
    assert more is None  # not the first factor: the codes already given stay
    assert len(db.tables.recovery) == 10
    for passkey in await passkeys.list_passkeys(ctx, token=token):
        await passkeys.remove(ctx, token=token, passkey_id=passkey["id"])
    assert db.tables.recovery == {}, "no factor left: nothing to recover"
    assert first["id"]
