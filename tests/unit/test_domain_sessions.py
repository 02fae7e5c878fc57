"""domain.sessions (user agents, recency, liveness, the amr column) and the session claims of
access tokens: `sid` required, `auth_time`, `amr` and `aal` carried."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gatehouse.domain.crypto import SigningKey
from gatehouse.domain.sessions import (
    SessionRecord,
    clip_user_agent,
    decode_amr,
    encode_amr,
    is_alive,
    is_recent,
)
from gatehouse.domain.tokens import AccessTokens, TokenError

from .test_domain_tokens import access_tokens, claims_for, now, sign, signing_key


@pytest.fixture
def key() -> SigningKey:
    return signing_key("ed-current")


@pytest.fixture
def tokens(key: SigningKey) -> AccessTokens:
    return access_tokens([key])


def test_user_agents_are_kept_printable_and_bounded() -> None:
    assert clip_user_agent(None) is None
    assert clip_user_agent("") is None
    assert clip_user_agent(" \x00\n") is None
    assert clip_user_agent("Firefox\r\n/1\x1b[31m") == "Firefox/1[31m"
    assert clip_user_agent("a" * 1000) == "a" * 256


def test_amr_is_stored_as_a_json_list() -> None:
    assert encode_amr(("pwd", "otp")) == '["pwd","otp"]'
    assert decode_amr('["pwd","otp"]') == ("pwd", "otp")
    assert decode_amr(encode_amr(())) == ()


def test_recent_means_within_the_window() -> None:
    moment, window = now(), timedelta(seconds=300)
    assert is_recent(moment, moment, window)
    assert is_recent(moment - window, moment, window)
    assert not is_recent(moment - window - timedelta(seconds=1), moment, window)
    assert not is_recent(None, moment, window)


def test_a_session_lives_until_revoked_idle_or_too_old() -> None:
    moment, idle, lifetime = now(), timedelta(days=30), timedelta(days=90)
    session = SessionRecord("s", "u", moment, moment, moment)
    assert is_alive(session, moment, idle, lifetime)
    assert not is_alive(session, moment + idle, idle, lifetime)
    refreshed = SessionRecord("s", "u", moment, moment + timedelta(days=80), moment)
    assert is_alive(refreshed, moment + timedelta(days=89), idle, lifetime)
    assert not is_alive(refreshed, moment + lifetime, idle, lifetime)
    revoked = SessionRecord("s", "u", moment, moment, moment, revoked_at=moment)
    assert not is_alive(revoked, moment, idle, lifetime)


class TestSessionClaims:
    def test_tokens_carry_the_sessions_proof(self, tokens: AccessTokens) -> None:
        moment = now()
        proved = moment - timedelta(minutes=7)
        token, issued = tokens.issue("u-1", "s-1", moment, auth_time=proved, amr=["pwd"], aal=1)
        claims = tokens.verify(token, moment)
        assert claims == issued
        assert (claims.sid, claims.auth_time, claims.amr, claims.aal) == (
            "s-1",
            proved,
            ("pwd",),
            1,
        )

    def test_auth_time_defaults_to_the_issue_time(self, tokens: AccessTokens) -> None:
        moment = now()
        token, _ = tokens.issue("u-1", "s-1", moment)
        assert tokens.verify(token, moment).auth_time == moment

    @pytest.mark.parametrize("sid", [None, "", 7, ["s"]])
    def test_a_token_of_no_session_is_refused(
        self, tokens: AccessTokens, key: SigningKey, sid: Any
    ) -> None:
        moment = now()
        claims = claims_for(moment)
        if sid is None:
            del claims["sid"]
        else:
            claims["sid"] = sid
        token = sign(claims, key)
        with pytest.raises(TokenError):
            tokens.verify(token, moment)
        with pytest.raises(TokenError):  # refused again: a refusal is never cached
            tokens.verify(token, moment)
        assert token not in tokens._verified
        with pytest.raises(ValueError):
            tokens.issue("u-1", "", moment)

    def test_a_token_without_the_proof_claims_has_no_auth_time(
        self, tokens: AccessTokens, key: SigningKey
    ) -> None:
        """Tokens issued before the claims existed stay valid, but never count as recent."""
        moment = now()
        claims = tokens.verify(sign(claims_for(moment), key), moment)
        assert (claims.sid, claims.auth_time, claims.amr, claims.aal) == ("family-1", None, (), 1)

    @pytest.mark.parametrize(
        "bad", [{"auth_time": "yesterday"}, {"amr": "pwd"}, {"amr": [1]}, {"aal": "1"}]
    )
    def test_malformed_proof_claims_are_refused(
        self, tokens: AccessTokens, key: SigningKey, bad: dict[str, Any]
    ) -> None:
        moment = now()
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment, **bad), key), moment)
