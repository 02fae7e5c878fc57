"""domain.tokens: EdDSA access JWTs and the attacks they must refuse; JWKS; refresh tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.domain.crypto import SigningKey, b64d, b64e
from gatehouse.domain.tokens import (
    ACCESS_TYPE,
    REFRESH_PREFIX,
    AccessTokens,
    TokenError,
    hash_refresh_token,
    new_refresh_token,
)

TTL = timedelta(minutes=15)


def signing_key(kid: str) -> SigningKey:
    return SigningKey(kid, Ed25519PrivateKey.generate())


def access_tokens(
    keys: list[SigningKey],
    *,
    issuer: str = "gatehouse",
    audience: str = "gatehouse",
    algorithms: list[str] | None = None,
    hs256_secret: bytes | None = None,
) -> AccessTokens:
    return AccessTokens(
        keys,
        issuer=issuer,
        audience=audience,
        ttl=TTL,
        algorithms=algorithms or ["EdDSA"],
        hs256_secret=hs256_secret,
    )


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def claims_for(moment: datetime, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "gatehouse",
        "aud": "gatehouse",
        "sub": "user-1",
        "sid": "family-1",
        "iat": int(moment.timestamp()),
        "nbf": int(moment.timestamp()),
        "exp": int((moment + TTL).timestamp()),
        "jti": "j1",
        "typ": ACCESS_TYPE,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT assembled without PyJWT's guard rails (for `alg: none` and HMAC confusion)."""
    head = b64e(json.dumps(header).encode())
    body = b64e(json.dumps(claims).encode())
    return f"{head}.{body}.{b64e(signature)}"


def hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    head = b64e(json.dumps(header).encode())
    body = b64e(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64e(mac)}"


@pytest.fixture
def key() -> SigningKey:
    return signing_key("ed-current")


@pytest.fixture
def tokens(key: SigningKey) -> AccessTokens:
    return access_tokens([key])


class TestIssueAndVerify:
    def test_round_trip(self, tokens: AccessTokens) -> None:
        moment = now()
        token, issued = tokens.issue("user-1", "family-1", moment)
        claims = tokens.verify(token, moment)
        assert claims.sub == "user-1"
        assert claims.sid == "family-1"
        assert claims.jti == issued.jti
        assert claims.exp == issued.exp == moment + TTL

    def test_header_and_claims(self, tokens: AccessTokens, key: SigningKey) -> None:
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "EdDSA"
        assert header["kid"] == key.kid
        assert header["typ"] == "at+jwt"
        public = key.private_key.public_key()
        claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="gatehouse")
        assert claims["iss"] == "gatehouse"
        assert claims["typ"] == ACCESS_TYPE
        assert claims["exp"] - claims["iat"] == TTL.total_seconds()

    def test_a_token_is_byte_for_byte_what_pyjwt_would_sign(
        self, tokens: AccessTokens, key: SigningKey
    ) -> None:
        # issue writes the JWS itself; Ed25519 is deterministic, so PyJWT's encode of the same
        # claims under the same key and header is the same text.
        token, _ = tokens.issue("user-1", "family-1", now(), amr=("pwd", "otp"), aal=2)
        claims = jwt.decode(
            token, key.private_key.public_key(), algorithms=["EdDSA"], audience="gatehouse"
        )
        assert claims["amr"] == ["pwd", "otp"] and claims["aal"] == 2
        assert token == sign(claims, key)

    def test_claims_beyond_ascii_are_read_back_as_written(self, key: SigningKey) -> None:
        tokens = access_tokens([key], issuer="Gatehouse Zürich ✓", audience="app-日本")
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        claims = jwt.decode(
            token, key.private_key.public_key(), algorithms=["EdDSA"], audience="app-日本"
        )
        assert claims["iss"] == "Gatehouse Zürich ✓"
        assert tokens.verify(token, moment).sub == "user-1"

    def test_an_issuer_that_is_not_unicode_is_refused_at_start(self, key: SigningKey) -> None:
        # An environment value that is not UTF-8 reaches Python as lone surrogates.
        with pytest.raises(ValueError, match="valid Unicode"):
            access_tokens([key], issuer=b"gate\xffhouse".decode("utf-8", "surrogateescape"))

    def test_each_token_has_its_own_jti(self, tokens: AccessTokens) -> None:
        moment = now()
        jtis = {tokens.verify(tokens.issue("u", "s", moment)[0], moment).jti for _ in range(20)}
        assert len(jtis) == 20

    def test_expired(self, tokens: AccessTokens) -> None:
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        tokens.verify(token, moment + TTL - timedelta(seconds=1))
        with pytest.raises(TokenError):
            tokens.verify(token, moment + TTL)
        with pytest.raises(TokenError):
            tokens.verify(token, moment + TTL + timedelta(hours=1))

    def test_expired_by_the_system_clock(self, key: SigningKey, tokens: AccessTokens) -> None:
        long_ago = now() - timedelta(hours=1)
        token = sign(claims_for(long_ago), key)
        with pytest.raises(TokenError):
            tokens.verify(token, now())

    def test_wrong_audience(self, key: SigningKey, tokens: AccessTokens) -> None:
        other = access_tokens([key], audience="another-service")
        moment = now()
        token, _ = other.issue("user-1", "family-1", moment)
        with pytest.raises(TokenError):
            tokens.verify(token, moment)

    def test_wrong_issuer(self, key: SigningKey, tokens: AccessTokens) -> None:
        other = access_tokens([key], issuer="someone-else")
        moment = now()
        token, _ = other.issue("user-1", "family-1", moment)
        with pytest.raises(TokenError):
            tokens.verify(token, moment)

    @pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"])
    def test_required_claims(self, key: SigningKey, tokens: AccessTokens, claim: str) -> None:
        moment = now()
        assert tokens.verify(sign(claims_for(moment), key), moment).sub == "user-1"
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment, **{claim: None}), key), moment)

    @pytest.mark.parametrize("typ", ["refresh", "JWT", "id+jwt", None])
    def test_wrong_typ_claim(self, key: SigningKey, tokens: AccessTokens, typ: str | None) -> None:
        moment = now()
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment, typ=typ), key), moment)

    def test_sub_must_be_a_string(self, key: SigningKey, tokens: AccessTokens) -> None:
        moment = now()
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment, sub=12345), key), moment)

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none(self, key: SigningKey, tokens: AccessTokens, alg: str) -> None:
        moment = now()
        token = hand_made({"alg": alg, "typ": "at+jwt", "kid": key.kid}, claims_for(moment))
        with pytest.raises(TokenError):
            tokens.verify(token, moment)
        with pytest.raises(TokenError):
            tokens.verify(token.rstrip("."), moment)

    def test_none_algorithm_cannot_be_configured(self, key: SigningKey) -> None:
        with pytest.raises(ValueError, match="none"):
            access_tokens([key], algorithms=["EdDSA", "none"])

    @pytest.mark.parametrize("encoding", ["raw", "pem"])
    @pytest.mark.parametrize("hs256_allowed", [False, True])
    def test_key_confusion_hs256_with_the_public_key(
        self, key: SigningKey, encoding: str, hs256_allowed: bool
    ) -> None:
        """An attacker signs HS256 using the (public) verification key as the HMAC secret."""
        public = key.private_key.public_key()
        secret = (
            public.public_bytes_raw()
            if encoding == "raw"
            else public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        verifier = (
            access_tokens([key], algorithms=["EdDSA", "HS256"], hs256_secret=b"s" * 32)
            if hs256_allowed
            else access_tokens([key])
        )
        moment = now()
        forged = hs256_with(
            secret, {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}, claims_for(moment)
        )
        with pytest.raises(TokenError):
            verifier.verify(forged, moment)

    def test_hs256_when_configured(self, key: SigningKey) -> None:
        secret = b"x" * 32
        hs = access_tokens([key], algorithms=["HS256"], hs256_secret=secret)
        moment = now()
        token, _ = hs.issue("user-1", "family-1", moment)
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        assert hs.verify(token, moment).sub == "user-1"
        # ... and a token under another secret is refused.
        forged = hs256_with(b"y" * 32, {"alg": "HS256", "typ": "at+jwt"}, claims_for(moment))
        with pytest.raises(TokenError):
            hs.verify(forged, moment)
        # EdDSA-only verifiers refuse HS256 tokens even when signed with a shared secret.
        with pytest.raises(TokenError):
            access_tokens([key]).verify(token, moment)

    @pytest.mark.parametrize("secret", [None, b"short"])
    def test_hs256_needs_a_long_secret(self, key: SigningKey, secret: bytes | None) -> None:
        with pytest.raises(ValueError, match="HS256"):
            access_tokens([key], algorithms=["HS256"], hs256_secret=secret)

    def test_unknown_kid(self, tokens: AccessTokens) -> None:
        stranger = signing_key("ed-stranger")
        moment = now()
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment), stranger), moment)

    def test_missing_kid(self, key: SigningKey, tokens: AccessTokens) -> None:
        moment = now()
        token = jwt.encode(claims_for(moment), key.private_key, algorithm="EdDSA")
        with pytest.raises(TokenError):
            tokens.verify(token, moment)

    def test_known_kid_signed_by_another_key(self, key: SigningKey, tokens: AccessTokens) -> None:
        impostor = SigningKey(key.kid, Ed25519PrivateKey.generate())
        moment = now()
        with pytest.raises(TokenError):
            tokens.verify(sign(claims_for(moment), impostor), moment)

    @pytest.mark.parametrize("name", ["jku", "jwk", "x5u", "x5c"])
    def test_key_naming_headers_are_refused(
        self, key: SigningKey, tokens: AccessTokens, name: str
    ) -> None:
        moment = now()
        public_raw = key.private_key.public_key().public_bytes_raw()
        value: Any = {
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64e(public_raw)},
            "x5c": ["MIIB"],
        }[name]
        token = sign(claims_for(moment), key, **{name: value})
        assert tokens.verify(sign(claims_for(moment), key), moment).sub == "user-1"
        with pytest.raises(TokenError):
            tokens.verify(token, moment)

    def test_tampered_signature(self, tokens: AccessTokens) -> None:
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        head, body, signature = token.split(".")
        raw = bytearray(b64d(signature))
        raw[10] ^= 0x01
        with pytest.raises(TokenError):
            tokens.verify(f"{head}.{body}.{b64e(bytes(raw))}", moment)

    def test_tampered_payload(self, tokens: AccessTokens) -> None:
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        head, body, signature = token.split(".")
        claims = json.loads(b64d(body))
        claims["sub"] = "admin"
        with pytest.raises(TokenError):
            tokens.verify(f"{head}.{b64e(json.dumps(claims).encode())}.{signature}", moment)

    @pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x", "e30.e30.", "...."])
    def test_garbage(self, tokens: AccessTokens, garbage: str) -> None:
        with pytest.raises(TokenError):
            tokens.verify(garbage, now())


class TestRotation:
    def test_older_key_still_verifies(self) -> None:
        old, new = signing_key("ed-old"), signing_key("ed-new")
        before = access_tokens([old])
        after = access_tokens([old, new])
        moment = now()
        old_token, _ = before.issue("user-1", "family-1", moment)
        assert after.verify(old_token, moment).sub == "user-1"

        new_token, _ = after.issue("user-2", "family-2", moment)
        assert jwt.get_unverified_header(new_token)["kid"] == "ed-new"
        assert after.verify(new_token, moment).sub == "user-2"
        with pytest.raises(TokenError):
            before.verify(new_token, moment)

    def test_retired_key_no_longer_verifies(self) -> None:
        old, new = signing_key("ed-old"), signing_key("ed-new")
        moment = now()
        old_token, _ = access_tokens([old]).issue("user-1", "family-1", moment)
        with pytest.raises(TokenError):
            access_tokens([new]).verify(old_token, moment)


class TestJwks:
    def test_lists_every_key_as_okp_ed25519(self) -> None:
        old, new = signing_key("ed-old"), signing_key("ed-new")
        document = access_tokens([old, new]).jwks()
        by_kid = {k["kid"]: k for k in document["keys"]}
        assert set(by_kid) == {"ed-old", "ed-new"}
        for signing in (old, new):
            entry = by_kid[signing.kid]
            assert entry["kty"] == "OKP"
            assert entry["crv"] == "Ed25519"
            assert entry["alg"] == "EdDSA"
            assert entry["use"] == "sig"
            assert b64d(entry["x"]) == signing.private_key.public_key().public_bytes_raw()
            assert "d" not in entry  # never the private part

    def test_a_client_verifies_with_the_published_key(self, key: SigningKey) -> None:
        tokens = access_tokens([key])
        moment = now()
        token, _ = tokens.issue("user-1", "family-1", moment)
        header = jwt.get_unverified_header(token)
        published = next(k for k in tokens.jwks()["keys"] if k["kid"] == header["kid"])
        public = jwt.PyJWK(published).key
        claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="gatehouse")
        assert claims["sub"] == "user-1"


class TestRefreshTokens:
    def test_at_least_128_bits_and_stored_hashed(self) -> None:
        key = b"k" * 32
        plaintext, stored = new_refresh_token(key)
        assert plaintext.startswith(REFRESH_PREFIX)
        assert len(b64d(plaintext[len(REFRESH_PREFIX) :])) * 8 >= 128
        assert stored == hash_refresh_token(key, plaintext)
        assert plaintext not in stored
        assert plaintext[len(REFRESH_PREFIX) :] not in stored
        assert len(stored) == 64

    def test_unique_and_keyed(self) -> None:
        key = b"k" * 32
        pairs = [new_refresh_token(key) for _ in range(50)]
        assert len({p for p, _ in pairs}) == 50
        assert len({h for _, h in pairs}) == 50
        plaintext = pairs[0][0]
        assert hash_refresh_token(b"j" * 32, plaintext) != hash_refresh_token(key, plaintext)


class TestClockInjection:
    @pytest.mark.parametrize("shift", [timedelta(hours=-2), timedelta(hours=2)])
    def test_verify_judges_time_by_the_given_now(
        self, tokens: AccessTokens, shift: timedelta
    ) -> None:
        """`verify(token, now)` judges exp and nbf at `now`, not by the system clock (PyJWT's
        own checks used to call a token from an injected clock expired or not yet valid)."""
        issued_at = now() + shift
        token, _ = tokens.issue("user-1", "family-1", issued_at)
        assert tokens.verify(token, issued_at + timedelta(minutes=1)).sub == "user-1"
        with pytest.raises(TokenError):
            tokens.verify(token, issued_at + TTL)
        with pytest.raises(TokenError):
            tokens.verify(token, issued_at - timedelta(minutes=1))  # not yet valid


class TestVerifiedCache:
    """A token checked once is not checked again, but time still is, and only the exact text
    of a good token is remembered."""

    def test_a_cached_token_still_expires(self) -> None:
        tokens = access_tokens([signing_key("k1")])
        issued_at = now()
        token, claims = tokens.issue("user-1", "family-1", issued_at)
        assert tokens.verify(token, issued_at) == claims
        assert tokens.verify(token, issued_at + TTL - timedelta(seconds=1)) == claims
        with pytest.raises(TokenError):
            tokens.verify(token, issued_at + TTL)

    def test_a_cached_token_is_not_yet_valid_before_its_nbf(self) -> None:
        tokens = access_tokens([signing_key("k1")])
        issued_at = now()
        token, _ = tokens.issue("user-1", "family-1", issued_at)
        tokens.verify(token, issued_at)
        with pytest.raises(TokenError):
            tokens.verify(token, issued_at - timedelta(seconds=30))

    def test_a_tampered_copy_of_a_cached_token_is_refused(self) -> None:
        tokens = access_tokens([signing_key("k1")])
        token, _ = tokens.issue("user-1", "family-1", now())
        tokens.verify(token, now())
        header, payload, signature = token.split(".")
        forged = json.loads(b64d(payload))
        forged["sub"] = "someone-else"
        tampered = f"{header}.{b64e(json.dumps(forged).encode())}.{signature}"
        with pytest.raises(TokenError):
            tokens.verify(tampered, now())
        with pytest.raises(TokenError):
            tokens.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), now())

    def test_the_cache_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import gatehouse.domain.tokens as module

        monkeypatch.setattr(module, "VERIFIED_CACHE_SIZE", 3)
        tokens = access_tokens([signing_key("k1")])
        issued = [tokens.issue(f"user-{i}", "family", now())[0] for i in range(5)]
        for token in issued:
            tokens.verify(token, now())
        assert len(tokens._verified) == 3
        assert list(tokens._verified) == issued[2:]  # the oldest went first
        assert tokens.verify(issued[0], now()).sub == "user-0"  # checked again, not refused
