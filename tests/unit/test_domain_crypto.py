"""domain.crypto: the AES-GCM keyring (context binding, tampering, rotation), keyed hashes and
the secrets document."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse.domain.crypto import (
    CIPHERTEXT_VERSION,
    DecryptionError,
    Keyring,
    b64d,
    b64e,
    generate_secrets_document,
    keyed_hash,
    parse_secrets,
    same,
)


def keyring(*kids: str) -> Keyring:
    return Keyring([(kid, os.urandom(32)) for kid in kids])


def flip_byte(token: str, index: int) -> str:
    """The same ciphertext with one byte of its binary body inverted."""
    version, kid, body = token.split(".", 2)
    raw = bytearray(b64d(body))
    raw[index] ^= 0xFF
    return f"{version}.{kid}.{b64e(bytes(raw))}"


class TestKeyring:
    def test_round_trip(self) -> None:
        ring = keyring("k1")
        token = ring.encrypt("+14155550123", "user.phone")
        assert ring.decrypt(token, "user.phone") == "+14155550123"

    def test_round_trip_of_unicode_and_empty_text(self) -> None:
        ring = keyring("k1")
        for text in ("", "Zoë 😀 ünïcode", "x" * 5000):
            assert ring.decrypt(ring.encrypt(text, "c"), "c") == text

    def test_ciphertext_names_version_and_key_and_hides_the_plaintext(self) -> None:
        ring = keyring("k1")
        token = ring.encrypt("123456", "ctx")
        version, kid, body = token.split(".", 2)
        assert (version, kid) == (CIPHERTEXT_VERSION, "k1")
        assert ring.key_id_of(token) == "k1"
        assert "123456" not in token
        # 12-byte nonce + ciphertext + 16-byte tag
        assert len(b64d(body)) == 12 + len("123456") + 16

    def test_each_encryption_uses_a_fresh_nonce(self) -> None:
        ring = keyring("k1")
        first, second = ring.encrypt("same", "ctx"), ring.encrypt("same", "ctx")
        assert first != second
        assert b64d(first.split(".")[2])[:12] != b64d(second.split(".")[2])[:12]

    def test_context_is_bound(self) -> None:
        ring = keyring("k1")
        token = ring.encrypt("secret", "send-otp:message-1")
        with pytest.raises(DecryptionError):
            ring.decrypt(token, "send-otp:message-2")
        with pytest.raises(DecryptionError):
            ring.decrypt(token, "user.phone")

    @pytest.mark.parametrize("index", [0, 11, 12, -1], ids=["nonce", "nonce-end", "body", "tag"])
    def test_tampering_is_detected(self, index: int) -> None:
        ring = keyring("k1")
        token = ring.encrypt("secret value", "ctx")
        with pytest.raises(DecryptionError):
            ring.decrypt(flip_byte(token, index), "ctx")

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda t: t[: len(t) // 2],  # truncated
            lambda t: t.split(".", 1)[1],  # no version
            lambda t: "v2." + t.split(".", 1)[1],  # unknown version
            lambda t: t + "!!",  # not base64
            lambda t: "",
            lambda t: "v1.k1.",  # empty body
            lambda t: "v1.k1." + b64e(b"\x00" * 27),  # shorter than nonce + tag
        ],
        ids=["truncated", "no-version", "v2", "bad-b64", "empty", "empty-body", "too-short"],
    )
    def test_malformed_ciphertexts_raise_one_error_type(self, mangle: Any) -> None:
        ring = keyring("k1")
        token = ring.encrypt("secret value", "ctx")
        with pytest.raises(DecryptionError):
            ring.decrypt(mangle(token), "ctx")

    def test_unknown_key_id(self) -> None:
        token = keyring("k1").encrypt("secret", "ctx")
        with pytest.raises(DecryptionError):
            keyring("k2").decrypt(token, "ctx")

    def test_same_key_id_with_another_key_fails(self) -> None:
        token = keyring("k1").encrypt("secret", "ctx")
        with pytest.raises(DecryptionError):
            keyring("k1").decrypt(token, "ctx")

    def test_ciphertext_relabelled_to_another_known_kid_fails(self) -> None:
        ring = keyring("old", "new")
        token = ring.encrypt("secret", "ctx")
        relabelled = token.replace(".new.", ".old.", 1)
        assert ring.key_id_of(relabelled) == "old"
        with pytest.raises(DecryptionError):
            ring.decrypt(relabelled, "ctx")

    def test_rotation(self) -> None:
        old_key, new_key = os.urandom(32), os.urandom(32)
        before = Keyring([("k1", old_key)])
        after = Keyring([("k1", old_key), ("k2", new_key)])
        old_token = before.encrypt("written before rotation", "ctx")

        assert after.decrypt(old_token, "ctx") == "written before rotation"
        new_token = after.encrypt("written after rotation", "ctx")
        assert after.current_kid == "k2"
        assert after.key_id_of(new_token) == "k2"
        assert after.decrypt(new_token, "ctx") == "written after rotation"
        # A process that has not received the new key cannot read new data (and says so).
        with pytest.raises(DecryptionError):
            before.decrypt(new_token, "ctx")

    @pytest.mark.parametrize(
        "keys",
        [[], [("k1", os.urandom(16))], [("k1", os.urandom(33))], [("k.1", os.urandom(32))]],
        ids=["none", "short-key", "long-key", "dot-in-kid"],
    )
    def test_invalid_keys_are_refused(self, keys: list[tuple[str, bytes]]) -> None:
        with pytest.raises(ValueError, match=r"."):
            Keyring(keys)


class TestKeyedHash:
    def test_deterministic_hex_sha256(self) -> None:
        key = os.urandom(32)
        digest = keyed_hash(key, "register", "a@example.com", "123456")
        assert digest == keyed_hash(key, "register", "a@example.com", "123456")
        assert len(digest) == 64
        int(digest, 16)

    def test_is_an_hmac_over_length_prefixed_parts(self) -> None:
        key = os.urandom(32)
        mac = hmac.new(key, digestmod=hashlib.sha256)
        for part in ("a", "bc"):
            mac.update(len(part.encode()).to_bytes(4, "big") + part.encode())
        assert keyed_hash(key, "a", "bc") == mac.hexdigest()

    def test_parts_are_separated(self) -> None:
        key = os.urandom(32)
        variants = {
            keyed_hash(key, "ab", "c"),
            keyed_hash(key, "a", "bc"),
            keyed_hash(key, "abc"),
            keyed_hash(key, "abc", ""),
            keyed_hash(key, "", "abc"),
            keyed_hash(key, "a", "b", "c"),
        }
        assert len(variants) == 6

    def test_depends_on_the_key(self) -> None:
        assert keyed_hash(os.urandom(32), "x") != keyed_hash(os.urandom(32), "x")

    def test_same_compares_exactly(self) -> None:
        digest = keyed_hash(os.urandom(32), "x")
        assert same(digest, str(digest))
        assert not same(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))
        assert not same(digest, digest[:-1])


class TestSecretsDocument:
    def test_generated_document_parses(self) -> None:
        doc = generate_secrets_document()
        parsed = parse_secrets(doc)
        assert len(parsed.code_key) == len(parsed.index_key) == len(parsed.token_key) == 32
        assert len({parsed.code_key, parsed.index_key, parsed.token_key}) == 3
        assert [kid for kid, _ in parsed.data_keys] == [doc["data_keys"][0]["kid"]]
        assert [k.kid for k in parsed.signing_keys] == [doc["signing_keys"][0]["kid"]]
        ring = parsed.keyring()
        assert ring.current_kid == doc["data_keys"][0]["kid"]
        assert ring.decrypt(ring.encrypt("x", "c"), "c") == "x"

    def test_two_documents_share_no_secret(self) -> None:
        one, two = generate_secrets_document(), generate_secrets_document()
        for name in ("code_key", "index_key", "token_key"):
            assert one[name] != two[name]
        assert one["signing_keys"][0]["private_pem"] != two["signing_keys"][0]["private_pem"]

    def test_the_last_data_key_encrypts(self) -> None:
        doc = generate_secrets_document()
        doc["data_keys"].append({"kid": "newer", "key": b64e(os.urandom(32))})
        assert parse_secrets(doc).keyring().current_kid == "newer"

    @pytest.mark.parametrize(
        "field", ["code_key", "index_key", "token_key", "data_keys", "signing_keys"]
    )
    def test_missing_field(self, field: str) -> None:
        doc = generate_secrets_document()
        del doc[field]
        with pytest.raises(ValueError, match="missing"):
            parse_secrets(doc)

    @pytest.mark.parametrize("field", ["code_key", "index_key", "token_key"])
    def test_short_hmac_key(self, field: str) -> None:
        doc = generate_secrets_document()
        doc[field] = b64e(os.urandom(31))
        with pytest.raises(ValueError, match="32 bytes"):
            parse_secrets(doc)

    def test_no_signing_key(self) -> None:
        doc = generate_secrets_document()
        doc["signing_keys"] = []
        with pytest.raises(ValueError, match="signing key"):
            parse_secrets(doc)

    def test_signing_key_must_be_ed25519(self) -> None:
        doc = generate_secrets_document()
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        doc["signing_keys"] = [{"kid": "ec", "private_pem": pem.decode()}]
        with pytest.raises(ValueError, match="Ed25519"):
            parse_secrets(doc)

    @pytest.mark.parametrize(
        "data_keys",
        [[], [{"kid": "k", "key": b64e(os.urandom(16))}], [{"kid": "a.b", "key": b64e(b"k" * 32)}]],
        ids=["empty", "short", "dot-in-kid"],
    )
    def test_invalid_data_keys(self, data_keys: list[dict[str, str]]) -> None:
        doc = generate_secrets_document()
        doc["data_keys"] = data_keys
        with pytest.raises(ValueError, match=r"."):
            parse_secrets(doc)

    @pytest.mark.parametrize("doc", [[], "secrets", {"code_key": 5}], ids=["list", "str", "int"])
    def test_not_a_document(self, doc: Any) -> None:
        with pytest.raises(ValueError, match=r"."):
            parse_secrets(doc)
