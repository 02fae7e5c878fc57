"""The WebAuthn ceremonies themselves, on py_webauthn: the options a browser is given, and the
checks of what its authenticator answers (origin, relying party id, challenge, user presence
and verification, signature, counter). No storage and no flow state: `flow.py` decides which
challenge is expected and what a verified credential is worth.

Every option and answer travels in the WebAuthn Level 3 JSON forms (base64url strings), so a
page hands them to `PublicKeyCredential.parseCreationOptionsFromJSON` / `.toJSON()` as they are.
Whatever py_webauthn finds wrong comes back as one exception, `Refused`, with its reason for the
audit line only: a client learns nothing more precise than "not accepted"."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from gatehouse.domain.factors import Passkey
from gatehouse.selfservice.context import RelyingParty
from gatehouse.selfservice.passkeys.terms import TIMEOUT_MS, Refused

__all__ = ["TIMEOUT_MS", "Refused"]  # with the ceremonies below, for flow.py
# WebAuthn caps credential ids at 1023 bytes: 1364 base64url characters.
_CREDENTIAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,1364}$")
_TRANSPORTS = {t.value: t for t in AuthenticatorTransport}
# What a parser may raise on bytes an attacker chose, besides py_webauthn's own exceptions
# (a bad base64 alphabet, a CBOR map of the wrong shape).
_MALFORMED = (WebAuthnException, ValueError, TypeError, KeyError, IndexError, AttributeError)


@dataclass(frozen=True, slots=True)
class NewCredential:
    """A verified registration: what is stored of the new passkey (base64url strings)."""

    credential_id: str
    public_key: str
    sign_count: int
    transports: str


def user_handle(user_id: str) -> bytes:
    """The account's handle on its authenticators: our opaque id (a UUID), never an email, so
    a passkey's metadata names nobody. It comes back in every discoverable sign-in."""
    return user_id.encode()


def _descriptors(passkeys: list[Passkey]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(p.credential_id),
            transports=[_TRANSPORTS[t] for t in p.transports.split(",") if t in _TRANSPORTS]
            or None,
        )
        for p in passkeys
    ]


def creation_options(
    rp: RelyingParty,
    *,
    challenge: bytes,
    user_id: str,
    user_name: str,
    display_name: str,
    existing: list[Passkey],
) -> dict[str, Any]:
    """`PublicKeyCredentialCreationOptionsJSON`: a discoverable credential (the authenticator
    keeps the account, so it can sign in with no email typed), user verification required,
    no attestation (we trust no vendor list; the key is what matters), and the account's own
    passkeys excluded, so one authenticator does not register twice."""
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_handle(user_id),
        user_name=user_name,
        user_display_name=display_name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            require_resident_key=True,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(existing),
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def request_options(
    rp: RelyingParty, *, challenge: bytes, allowed: list[Passkey] | None
) -> dict[str, Any]:
    """`PublicKeyCredentialRequestOptionsJSON`. Without `allowed`, no `allowCredentials`: the
    authenticator offers the passkeys it holds for this relying party and the answer names
    the account."""
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allowed) if allowed else None,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def credential_id_of(credential: dict[str, Any]) -> str:
    """The credential id an assertion claims (checked against its `rawId` when verified)."""
    found = credential.get("id")
    if not isinstance(found, str) or not _CREDENTIAL_ID.match(found):
        raise Refused("malformed credential id")
    return found


def user_handle_of(credential: dict[str, Any]) -> bytes | None:
    """The account an assertion says it is for (discoverable credentials always say)."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if handle is None:
        return None
    if not isinstance(handle, str):
        raise Refused("malformed user handle")
    try:
        return base64url_to_bytes(handle)
    except _MALFORMED as exc:
        raise Refused("malformed user handle") from exc


def verify_creation(
    rp: RelyingParty, credential: dict[str, Any], *, challenge: bytes
) -> NewCredential:
    """Check a registration answer: our challenge, one of our origins, our relying party id, the
    user present and verified, a public key of an algorithm we verify."""
    try:
        parsed = parse_registration_credential_json(credential)
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
            require_user_verification=True,
        )
    except _MALFORMED as exc:
        raise Refused(type(exc).__name__) from exc
    if len(verified.credential_id) > 1023:
        raise Refused("credential id over 1023 bytes")
    # Hints for later `allowCredentials` (which ways the browser may reach the authenticator);
    # only the values WebAuthn defines are kept.
    transports = [t.value for t in parsed.response.transports or []]
    return NewCredential(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=",".join(dict.fromkeys(transports))[:200],
    )


def verify_assertion(
    rp: RelyingParty, credential: dict[str, Any], *, challenge: bytes, passkey: Passkey
) -> int:
    """Check a sign-in answer against the stored passkey: our challenge, origin and relying
    party id, the user present and verified, the signature, and a counter ahead of the stored
    one (or both zero: authenticators that keep none). Returns the new counter."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=base64url_to_bytes(passkey.public_key),
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except _MALFORMED as exc:
        raise Refused(type(exc).__name__) from exc
    return verified.new_sign_count
