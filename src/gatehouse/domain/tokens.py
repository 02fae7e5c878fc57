"""Access JWTs (EdDSA under a kid, HS256 opt-in) and opaque refresh tokens."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatehouse.domain.crypto import SigningKey, b64e, keyed_hash, same
from gatehouse.errors import TokenError

ACCESS_TYPE = "at+jwt"
CLOCK_SKEW = timedelta(seconds=5)
REFRESH_PREFIX = "rt_"  # a token stored as a row of its own (refresh_tokens), before 0009
SESSION_REFRESH_PREFIX = "rs_"  # a token of its session's row: `SessionRefresh` below
_TAG_CHARS = 32  # hex: the tag's 128 bits
# Headers that would let a token name its own verification key: never honoured.
FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})
VERIFIED_CACHE_SIZE = 4096  # about 1 MB of checked tokens per process


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    jti: str
    sid: str  # the session (refresh-token family); never empty
    exp: datetime
    auth_time: datetime | None = None  # when the session last proved a factor
    amr: tuple[str, ...] = ()  # RFC 8176 methods
    aal: int = 1


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A stored refresh token: only its hash is kept; the family links every rotation."""

    id: str
    family_id: str
    user_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    family_expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


class AccessTokens:
    """Signs with the newest signing key; verifies with any key still published (rotation)."""

    def __init__(
        self,
        signing_keys: list[SigningKey],
        *,
        issuer: str,
        audience: str,
        ttl: timedelta,
        algorithms: list[str],
        hs256_secret: bytes | None = None,
    ):
        if "none" in (a.lower() for a in algorithms):
            raise ValueError("the 'none' algorithm is never allowed")
        if "HS256" in algorithms and (hs256_secret is None or len(hs256_secret) < 32):
            raise ValueError("HS256 needs GATEHOUSE_JWT_SECRET of at least 32 bytes")
        self._signing = signing_keys[-1]
        self._public: dict[str, Ed25519PublicKey] = {
            k.kid: k.private_key.public_key() for k in signing_keys
        }
        self._issuer, self._audience, self._ttl = issuer, audience, ttl
        self._algorithms = list(algorithms)
        self._hs256 = hs256_secret
        # Tokens whose signature and claims were already checked, by their exact text: a
        # client presents one token many times, and the signature check is most of the cost of
        # an authenticated read. Only time is judged again on every use. The keys cannot change
        # under a running process, so a cached answer is the answer a new check would give.
        self._verified: dict[str, tuple[AccessClaims, datetime]] = {}
        # The signing key's header, encoded once: `issue` signs without PyJWT (see there).
        header = {"alg": "EdDSA", "kid": self._signing.kid, "typ": ACCESS_TYPE}
        self._eddsa_header = b64e(orjson.dumps(header)).encode() + b"."
        try:  # at start-up, not at the first sign-in: text that is not Unicode (a bad setting)
            orjson.dumps([issuer, audience])
        except orjson.JSONEncodeError as exc:
            raise ValueError("the JWT issuer and audience must be valid Unicode text") from exc

    def issue(
        self,
        user_id: str,
        session_id: str,
        now: datetime,
        *,
        auth_time: datetime | None = None,
        amr: Sequence[str] = ("pwd",),
        aal: int = 1,
    ) -> tuple[str, AccessClaims]:
        """A token of session `session_id`, whose last proof of a factor was at `auth_time`
        (default `now`)."""
        if not session_id:
            raise ValueError("an access token belongs to a session")
        exp = now + self._ttl
        proved = auth_time or now
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "sid": session_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(exp.timestamp()),
            "jti": uuid.uuid4().hex,
            "typ": ACCESS_TYPE,
            "auth_time": int(proved.timestamp()),
            "amr": list(amr),
            "aal": aal,
        }
        if self._algorithms[0] == "HS256":
            assert self._hs256 is not None
            token = jwt.encode(claims, self._hs256, algorithm="HS256", headers={"typ": "at+jwt"})
        else:
            # The compact JWS (RFC 7515 3.1) written here: for ASCII claims byte for byte what
            # PyJWT's encode writes (Ed25519 signatures are deterministic; PyJWT escapes other
            # characters where orjson writes UTF-8, the same JSON). 52-60 us where PyJWT took
            # 84, of which the signature is 45: about 3 % of a refresh's api CPU.
            signing_input = self._eddsa_header + b64e(orjson.dumps(claims)).encode()
            signature = self._signing.private_key.sign(signing_input)
            token = f"{signing_input.decode()}.{b64e(signature)}"
        proved = datetime.fromtimestamp(int(proved.timestamp()), tz=UTC)  # as verify reads it
        return token, AccessClaims(
            user_id, str(claims["jti"]), session_id, exp, proved, tuple(amr), aal
        )

    def verify(self, token: str, now: datetime) -> AccessClaims:
        cached = self._verified.get(token)
        if cached is None:
            cached = self._check(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = cached
        claims, nbf = cached
        if claims.exp <= now:
            raise TokenError("expired")
        if nbf > now + CLOCK_SKEW:  # nodes' clocks drift a little: do not refuse fresh tokens
            raise TokenError("not yet valid")
        return claims

    def _check(self, token: str) -> tuple[AccessClaims, datetime]:
        """Everything but time: the claims and not-before of a well-signed access token."""
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg not in self._algorithms or FORBIDDEN_HEADERS & header.keys():
                raise TokenError("algorithm or header not allowed")
            if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
                raise TokenError("not an access token")  # RFC 9068: an ID token is not one
            key: Any = self._hs256 if alg == "HS256" else self._public.get(header.get("kid", ""))
            if key is None:
                raise TokenError("unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],  # exactly the one algorithm this key is for: no key confusion
                audience=self._audience,
                issuer=self._issuer,
                # Time is judged below against the injected `now`, not PyJWT's own clock.
                options={
                    "require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except TokenError:
            raise
        except jwt.PyJWTError as exc:
            raise TokenError("invalid token") from exc
        if claims.get("typ") != ACCESS_TYPE or not isinstance(claims.get("sub"), str):
            raise TokenError("not an access token")
        # A token of no session could never be revoked: refused, whoever signed it.
        sid = claims.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TokenError("no session")
        try:
            exp = datetime.fromtimestamp(claims["exp"], tz=UTC)
            nbf = datetime.fromtimestamp(claims["nbf"], tz=UTC)
            proved = claims.get("auth_time")
            auth_time = None if proved is None else datetime.fromtimestamp(proved, tz=UTC)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TokenError("bad time claims") from exc
        amr, aal = claims.get("amr", []), claims.get("aal", 1)
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise TokenError("bad amr")
        if type(aal) is not int:
            raise TokenError("bad aal")
        return AccessClaims(claims["sub"], claims["jti"], sid, exp, auth_time, tuple(amr), aal), nbf

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, public in self._public.items():
            raw = public.public_bytes_raw()
            keys.append(
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "kid": kid,
                    "use": "sig",
                    "alg": "EdDSA",
                    "x": b64e(raw),
                }
            )
        return {"keys": keys}


def new_refresh_token(token_key: bytes) -> tuple[str, str]:
    """A 256-bit opaque token and the keyed hash that is stored instead of it (a row of
    refresh_tokens: how tokens were kept before migration 0009; tests make them still)."""
    plaintext = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_refresh_token(token_key, plaintext)


@dataclass(frozen=True, slots=True)
class SessionRefresh:
    """A refresh token kept in its session's row: the session's id and the token's generation
    (1 for the sign-in's, one more at every rotation) beside 256 random bits, and a tag, a MAC
    of the three under the token key.

    The row keeps the current generation and the keyed hash of its whole token, so a session
    holds one token's state however often it is refreshed (a row per rotation grew without end,
    and made each refresh write a row and four index entries). A token of an earlier
    generation is one already used: presented again, it revokes the session (reuse). The tag
    proves such a token was issued by this service without keeping it, so knowing a session's
    id (an access token's `sid`) is not enough to have the session revoked; and the hash, not
    the tag, admits the current one, so the key alone takes no session over (it can end one,
    and what it makes is recorded as `unissued_token`)."""

    session_id: str
    generation: int
    plaintext: str = field(repr=False)  # a secret: never in a log line or a traceback


def _tag(token_key: bytes, session_id: str, generation: int, nonce: str) -> str:
    return keyed_hash(token_key, "refresh-tag", session_id, str(generation), nonce)[:_TAG_CHARS]


def new_session_refresh(
    token_key: bytes, session_id: str, generation: int
) -> tuple[SessionRefresh, str]:
    """Generation `generation` of the session's refresh token, and the hash its row keeps."""
    nonce = secrets.token_urlsafe(32)
    tag = _tag(token_key, session_id, generation, nonce)
    plaintext = f"{SESSION_REFRESH_PREFIX}{session_id}.{generation}.{nonce}.{tag}"
    token = SessionRefresh(session_id, generation, plaintext)
    return token, hash_refresh_token(token_key, plaintext)


def read_session_refresh(token_key: bytes, plaintext: str) -> SessionRefresh | None:
    """The session and generation a token of `new_session_refresh` names, if its tag is this
    service's; None for anything else (a token of the older kind among them)."""
    if not plaintext.startswith(SESSION_REFRESH_PREFIX) or len(plaintext) > 200:
        return None
    parts = plaintext[len(SESSION_REFRESH_PREFIX) :].split(".")
    if len(parts) != 4:
        return None
    session_id, generation, nonce, tag = parts
    if not (generation.isascii() and generation.isdigit() and len(generation) <= 18):
        return None
    if generation != str(int(generation)):  # one spelling a generation: "01" is not "1"
        return None
    if not session_id or not nonce:
        return None
    if not same(tag, _tag(token_key, session_id, int(generation), nonce)):
        return None
    return SessionRefresh(session_id, int(generation), plaintext)


def hash_refresh_token(token_key: bytes, plaintext: str) -> str:
    return keyed_hash(token_key, "refresh", plaintext)
