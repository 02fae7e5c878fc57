"""Secrets, AES-256-GCM keyring with key ids, and keyed hashes (codes, blind indexes, tokens)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehouse.errors import DecryptionError

CIPHERTEXT_VERSION = "v1"


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Keyring:
    """AES-256-GCM under named keys; the last key encrypts, every key decrypts (rotation)."""

    def __init__(self, keys: list[tuple[str, bytes]]):
        if not keys:
            raise ValueError("keyring needs at least one key")
        for kid, key in keys:
            if len(key) != 32 or "." in kid:
                raise ValueError(f"data key {kid!r} must be 32 bytes with no '.' in its id")
        self._aeads = {kid: AESGCM(key) for kid, key in keys}
        self.current_kid = keys[-1][0]

    def encrypt(self, plaintext: str, context: str) -> str:
        """`v1.<kid>.<nonce+ciphertext>`; `context` is bound as associated data so a ciphertext
        cannot be moved to another field or purpose."""
        nonce = os.urandom(12)
        sealed = self._aeads[self.current_kid].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{CIPHERTEXT_VERSION}.{self.current_kid}.{b64e(nonce + sealed)}"

    def decrypt(self, token: str, context: str) -> str:
        try:
            version, kid, body = token.split(".", 2)
            aead = self._aeads[kid]
            raw = b64d(body)
            if version != CIPHERTEXT_VERSION or len(raw) < 28:
                raise DecryptionError("unsupported ciphertext")
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except DecryptionError:
            raise
        except Exception as exc:  # InvalidTag, KeyError, bad base64: one answer for all
            raise DecryptionError("cannot decrypt") from exc

    def key_id_of(self, token: str) -> str:
        return token.split(".", 2)[1]


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


@dataclass(frozen=True)
class Secrets:
    """Everything secret a process needs, parsed from the secrets document."""

    code_key: bytes
    index_key: bytes
    token_key: bytes
    data_keys: list[tuple[str, bytes]]
    signing_keys: list[SigningKey]

    def keyring(self) -> Keyring:
        return Keyring(self.data_keys)


def _new_signing_key() -> dict[str, str]:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"kid": f"ed-{secrets.token_hex(6)}", "private_pem": pem.decode()}


def generate_secrets_document() -> dict[str, Any]:
    """A fresh secrets document: what `gatehouse keys generate` prints and development writes."""
    return {
        "code_key": b64e(os.urandom(32)),
        "index_key": b64e(os.urandom(32)),
        "token_key": b64e(os.urandom(32)),
        "data_keys": [{"kid": f"k{secrets.token_hex(4)}", "key": b64e(os.urandom(32))}],
        "signing_keys": [_new_signing_key()],
    }


def parse_secrets(doc: dict[str, Any]) -> Secrets:
    try:
        signing = []
        for item in doc["signing_keys"]:
            key = serialization.load_pem_private_key(item["private_pem"].encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("signing keys must be Ed25519")
            signing.append(SigningKey(item["kid"], key))
        secrets_ = Secrets(
            code_key=b64d(doc["code_key"]),
            index_key=b64d(doc["index_key"]),
            token_key=b64d(doc["token_key"]),
            data_keys=[(item["kid"], b64d(item["key"])) for item in doc["data_keys"]],
            signing_keys=signing,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"secrets document is missing a field: {exc}") from exc
    if min(len(secrets_.code_key), len(secrets_.index_key), len(secrets_.token_key)) < 32:
        raise ValueError("HMAC keys must be at least 32 bytes")
    if not secrets_.signing_keys:
        raise ValueError("secrets document needs at least one signing key")
    secrets_.keyring()  # validates data keys
    return secrets_


def keyed_hash(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 over unambiguous parts: stored instead of codes, tokens and lookup values."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode()
        mac.update(len(data).to_bytes(4, "big"))
        mac.update(data)
    return mac.hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def rotate_signing_keys(
    doc: dict[str, Any], now: datetime, keep_retired_for: timedelta
) -> dict[str, Any]:
    """A new document whose newest signing key is fresh. The previous one is marked retired and
    still verifies (tokens it signed live on until they expire); keys retired longer ago than
    `keep_retired_for` (the access-token lifetime) are dropped, as nothing they signed is valid."""
    kept = []
    for item in doc["signing_keys"]:
        retired = item.get("retired_at")
        if retired and datetime.fromisoformat(retired) + keep_retired_for < now:
            continue
        kept.append({**item, "retired_at": retired or now.isoformat()})
    return {**doc, "signing_keys": [*kept, _new_signing_key()]}


def add_data_key(doc: dict[str, Any]) -> dict[str, Any]:
    """A new document whose newest data key encrypts from now on; older keys still decrypt."""
    new = {"kid": f"k{secrets.token_hex(4)}", "key": b64e(os.urandom(32))}
    return {**doc, "data_keys": [*doc["data_keys"], new]}
