"""A software WebAuthn authenticator and client for tests: what a browser and a platform
authenticator would answer to Gatehouse's options, in the WebAuthn JSON forms
(`RegistrationResponseJSON`, `AuthenticationResponseJSON`, base64url fields).

ES256 keys (P-256, from `cryptography`), attestation `none`, discoverable credentials (each keeps
its user handle and answers a `get` with no `allowCredentials`), a signature counter per
credential. Every flag, the origin, the relying party id and the counter can be overridden for
one ceremony, so tests can make exactly one thing wrong."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40  # authenticator data flags: user present, verified, attested data
AAGUID = bytes(16)  # "no AAGUID": what attestation `none` usually carries


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftCredential:
    credential_id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        # COSE_Key (RFC 9052/9053): kty EC2, alg ES256, crv P-256, x, y.
        return bytes(
            cbor2.dumps(
                {
                    1: 2,
                    3: -7,
                    -1: 1,
                    -2: numbers.x.to_bytes(32, "big"),
                    -3: numbers.y.to_bytes(32, "big"),
                }
            )
        )


class SoftAuthenticator:
    """One authenticator (a phone, a security key) with the browser around it at `origin`."""

    def __init__(self, origin: str = "http://localhost:8000", *, counter_step: int = 1):
        self.origin = origin
        self.counter_step = counter_step  # 0: an authenticator that keeps no counter
        self.credentials: dict[bytes, SoftCredential] = {}

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        document = {
            "type": kind,
            "challenge": challenge,
            "origin": origin or self.origin,
            "crossOrigin": False,
        }
        return json.dumps(document, separators=(",", ":")).encode()

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = UP | UV | AT,
        reuse: str | None = None,
    ) -> dict[str, Any]:
        """`navigator.credentials.create()` on `PublicKeyCredentialCreationOptionsJSON`. With
        `reuse` (a credential id of this authenticator), that credential is attested again, as
        a forged registration of a known credential would be."""
        rp = rp_id or options["rp"]["id"]
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if reuse is None and excluded & set(self.credentials):
            raise RuntimeError("InvalidStateError: this authenticator is already registered")
        if reuse is not None:
            credential = self.credentials[unb64url(reuse)]
        else:
            credential = SoftCredential(
                credential_id=os.urandom(32),
                key=ec.generate_private_key(ec.SECP256R1()),
                rp_id=rp,
                user_handle=unb64url(options["user"]["id"]),
            )
            self.credentials[credential.credential_id] = credential
        attested = (
            AAGUID
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + credential.cose_key()
        )
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = UP | UV,
        credential_id: str | None = None,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """`navigator.credentials.get()` on `PublicKeyCredentialRequestOptionsJSON`: the
        credential named (or the only one allowed, or the first discoverable one for the
        relying party), its counter moved on (or set to `sign_count`)."""
        rp = options.get("rpId") or rp_id
        credential = self._pick(options, rp, credential_id)
        rp = rp_id or rp
        if sign_count is None:
            credential.sign_count += self.counter_step
        else:
            credential.sign_count = sign_count
        auth_data = (
            hashlib.sha256(str(rp).encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = credential.key.sign(signed, ec.ECDSA(hashes.SHA256()))  # DER, as WebAuthn
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(user_handle or credential.user_handle),
            },
        }

    def _pick(
        self, options: dict[str, Any], rp: str | None, credential_id: str | None
    ) -> SoftCredential:
        if credential_id is not None:
            return self.credentials[unb64url(credential_id)]
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials", [])}
        for candidate in self.credentials.values():
            if (not allowed or candidate.credential_id in allowed) and candidate.rp_id == rp:
                return candidate
        raise RuntimeError("NotAllowedError: no credential of this authenticator is allowed")
