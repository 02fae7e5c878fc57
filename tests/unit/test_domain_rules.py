"""domain.codes, domain.users, domain.events and the flows' field validation."""

from __future__ import annotations

import unicodedata
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.domain import codes, events
from gatehouse.domain.codes import CODE_DIGITS, generate_code, looks_like_code
from gatehouse.domain.users import (
    NAME_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    User,
    clean_name,
    normalize_email,
    password_problem,
    public_view,
)
from gatehouse.errors import InvalidInput
from gatehouse.selfservice.validation import require_name, require_password, require_phone


class TestCodes:
    def test_six_ascii_digits(self) -> None:
        assert CODE_DIGITS == 6
        for _ in range(500):
            code = generate_code()
            assert len(code) == 6
            assert code.isascii()
            assert code.isdigit()
            assert looks_like_code(code)

    def test_every_digit_appears_in_every_position(self) -> None:
        samples = [generate_code() for _ in range(2000)]
        for position in range(6):
            assert set(Counter(s[position] for s in samples)) == set("0123456789")
        assert len(set(samples)) > 1900  # 10^6 possibilities: almost no repeats

    def test_leading_zeros_are_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(codes.secrets, "randbelow", lambda n: 42)
        assert generate_code() == "42".zfill(6)

    def test_uses_the_os_csprng_over_the_full_range(self, monkeypatch: pytest.MonkeyPatch) -> None:
        asked: list[int] = []

        def randbelow(n: int) -> int:
            asked.append(n)
            return n - 1

        monkeypatch.setattr(codes.secrets, "randbelow", randbelow)
        assert generate_code() == "9" * 6
        assert asked == [10**6]

    @pytest.mark.parametrize(
        "value",
        [
            "12345",
            "1234567",
            "",
            "12a456",
            " 123456",
            "123 56",
            "-12345",
            "+12345",
            "１２３４５６",  # fullwidth digits: isdigit() but not ASCII
            "١٢٣٤٥٦",  # Arabic-Indic digits
            "12345²",  # superscript two is a digit to str.isdigit
        ],
    )
    def test_looks_like_code_refuses(self, value: str) -> None:
        assert not looks_like_code(value)

    @pytest.mark.parametrize("value", ["000000", "123456", "999999"])
    def test_looks_like_code_accepts(self, value: str) -> None:
        assert looks_like_code(value)


class TestEmail:
    @pytest.mark.parametrize(
        ("raw", "normal"),
        [
            ("  Ada@Example.COM ", "ada@example.com"),
            ("ADA@EXAMPLE.COM", "ada@example.com"),
            ("ada@example.com", "ada@example.com"),
        ],
    )
    def test_normalize_email(self, raw: str, normal: str) -> None:
        assert normalize_email(raw) == normal
        assert normalize_email(normalize_email(raw)) == normal


class TestPassword:
    def test_bounds(self) -> None:
        assert PASSWORD_MIN == 8
        assert PASSWORD_MAX >= 64
        assert password_problem("a" * (PASSWORD_MIN - 1)) is not None
        assert password_problem("a" * PASSWORD_MIN) is None
        assert password_problem("a" * 64) is None
        assert password_problem("a" * 65) is None
        assert password_problem("a" * PASSWORD_MAX) is None
        assert password_problem("a" * (PASSWORD_MAX + 1)) is not None
        assert password_problem("") is not None

    def test_no_composition_rules(self) -> None:
        for password in ("aaaaaaaa", "12345678", "        x", "пароль-длинный"):
            assert password_problem(password) is None

    def test_length_in_code_points_not_bytes_or_utf16_units(self) -> None:
        emoji = "😀"  # 4 UTF-8 bytes, 2 UTF-16 units, 1 code point
        assert password_problem(emoji * (PASSWORD_MIN - 1)) is not None
        assert password_problem(emoji * PASSWORD_MIN) is None
        assert password_problem("é" * (PASSWORD_MIN - 1)) is not None

    def test_length_counted_after_nfkc(self) -> None:
        # "e" + combining acute is two code points; NFKC composes it into one "é".
        decomposed = "e\u0301"
        assert len(unicodedata.normalize("NFKC", decomposed)) == 1
        assert password_problem(decomposed * (PASSWORD_MIN - 1)) is not None  # 14 raw, 7 after
        assert password_problem(decomposed * PASSWORD_MIN) is None
        # The "ﬀ" ligature is one code point that NFKC expands into "ff".
        ligature = "\ufb00"
        assert len(unicodedata.normalize("NFKC", ligature)) == 2
        assert password_problem(ligature * (PASSWORD_MIN // 2)) is None  # 4 raw, 8 after


class TestName:
    def test_trims_and_composes(self) -> None:
        assert clean_name("  Ada Lovelace  ") == "Ada Lovelace"
        assert clean_name("Zoe\u0308") == "Zoë"
        assert clean_name("Zoë 😀 李") == "Zoë 😀 李"

    @pytest.mark.parametrize(
        "name",
        [
            "Ada\r\nBcc: victim@example.com",
            "Ada\nLovelace",
            "Ada\rLovelace",
            "Ada\x00",
            "A\x1b[31mda",
            "Ada\tLovelace",
            "Ada\x7f",
            "Ada\u0085Lovelace",  # NEL, a C1 control
            "Ada\u200bLovelace",  # zero-width space, a format character
            "",
            "   ",
        ],
    )
    def test_refuses(self, name: str) -> None:
        assert clean_name(name) is None

    def test_length(self) -> None:
        assert clean_name("a" * NAME_MAX) == "a" * NAME_MAX
        assert clean_name("a" * (NAME_MAX + 1)) is None


class TestValidation:
    def test_require_name(self) -> None:
        assert require_name(" Ada ") == "Ada"
        with pytest.raises(InvalidInput) as caught:
            require_name("Ada\r\nX")
        assert [e["field"] for e in caught.value.errors] == ["name"]

    def test_require_password_names_the_field(self) -> None:
        require_password("long enough")
        with pytest.raises(InvalidInput) as caught:
            require_password("short", field="new_password")
        assert [e["field"] for e in caught.value.errors] == ["new_password"]

    @pytest.mark.parametrize(
        ("raw", "normal"),
        [
            ("+1 (415) 555-0123", "+14155550123"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+14155550123", "+14155550123"),
        ],
    )
    def test_require_phone_normalizes_to_e164(self, raw: str, normal: str) -> None:
        assert require_phone(raw) == normal

    @pytest.mark.parametrize("raw", [None, ""])
    def test_require_phone_allows_none(self, raw: str | None) -> None:
        assert require_phone(raw) is None

    @pytest.mark.parametrize(
        "raw", ["4155550123", "+0155550123", "+1415555012345678", "+1-415-CALL-NOW", "+1 415 55"]
    )
    def test_require_phone_refuses(self, raw: str) -> None:
        with pytest.raises(InvalidInput) as caught:
            require_phone(raw)
        assert [e["field"] for e in caught.value.errors] == ["phone"]


class TestPublicView:
    def test_never_the_hash(self) -> None:
        now = datetime.now(UTC)
        user = User("u1", "a@example.com", "Ada", "$argon2id$secret-hash", now, now)
        view = public_view(user, "+14155550123")
        assert "password_hash" not in view
        assert "$argon2id$secret-hash" not in repr(view)
        assert view["id"] == "u1"
        assert view["phone"] == "+14155550123"
        assert view["email_verified"] is False
        assert public_view(user.with_changes(email_verified_at=now), None)["email_verified"]


class TestEvents:
    def test_user_event_is_a_cloudevent_keyed_by_user(self) -> None:
        now = datetime.now(UTC)
        message = events.user_event(events.LOGGED_IN, "user-1", {"factor": "password"}, now)
        payload = message.payload
        assert message.topic == events.USER_EVENTS == "user-events"
        assert message.key == "user-1"
        assert message.id == payload["id"]
        assert payload["specversion"] == "1.0"
        assert payload["type"] == "gatehouse.user.logged_in"
        assert payload["subject"] == "user-1"
        assert payload["source"]
        assert payload["data"] == {"user_id": "user-1", "factor": "password"}
        assert datetime.fromisoformat(payload["time"].replace("Z", "+00:00")) == now
        assert payload["time"].endswith("Z")

    def test_event_ids_are_unique(self) -> None:
        now = datetime.now(UTC)
        ids = {events.user_event(events.VERIFIED, "u", {}, now).id for _ in range(100)}
        assert len(ids) == 100

    def test_delivery_command_fields(self) -> None:
        now = datetime.now(UTC)
        message = events.delivery(
            key="k",
            channel="email",
            to="a@example.com",
            template="verify-email",
            now=now,
            expires_at=now + timedelta(minutes=10),
            code_ciphertext="v1.k.x",
        )
        assert message.topic == events.SEND_OTP == "send-otp"
        assert set(message.payload) >= {
            "id",
            "channel",
            "to",
            "template",
            "locale",
            "code_ciphertext",
            "expires_at",
        }
        assert message.payload["id"] == message.id
        expires = datetime.fromisoformat(message.payload["expires_at"].replace("Z", "+00:00"))
        assert expires == now + timedelta(minutes=10)

    def test_code_context_is_per_message(self) -> None:
        assert events.code_context("a") != events.code_context("b")
        assert "a" in events.code_context("a")

    def test_event_types(self) -> None:
        kinds = [
            events.REGISTERED,
            events.VERIFIED,
            events.LOGGED_IN,
            events.LOGIN_FAILED,
            events.UPDATED,
            events.PASSWORD_RESET,
            events.DELETED,
            events.SESSION_REVOKED,
        ]
        suffixes = [
            "registered",
            "verified",
            "logged_in",
            "login_failed",
            "updated",
            "password_reset",
            "deleted",
            "session_revoked",
        ]
        assert kinds == [f"gatehouse.user.{s}" for s in suffixes]
