"""`fields.Email` answers as pydantic's EmailStr does, for every address: its fast path for a plain
local part (the domain checked once by email_validator, then cached) accepts and writes exactly
what EmailStr would, and everything else goes to EmailStr itself."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from gatehouse.selfservice import fields
from gatehouse.selfservice.fields import Email

FAST, SLOW = TypeAdapter(Email), TypeAdapter(EmailStr)

EDGES = [
    "ada@example.com",
    "Ada.Lovelace+tag@Example.COM",
    "p1234-99@bench.example",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + ".".join(["b" * 63] * 3) + ".com",
    "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".c" + "o" * 5,
    "x@" + "d" * 63 + "." + "e" * 63 + "." + "f" * 63 + "." + "g" * 60,
    ".a@example.com",
    "a.@example.com",
    "a..b@example.com",
    "a@-example.com",
    "a@example-.com",
    "a@example..com",
    "a@example.com.",
    "a@.example.com",
    "a@localhost",
    "a@example.invalid",
    "a@host.local",
    "a@example.test",
    "a@1.2.3.4",
    "a@example.123",
    "a@[127.0.0.1]",
    '"quoted"@example.com',
    "Ada <ada@example.com>",
    " ada@example.com",
    "ada@example.com ",
    "ada@exämple.com",
    "adä@example.com",
    "ada@xn--exmple-cua.com",
    "ada@XN--EXMPLE-CUA.COM",
    "a!#$%&'*+/=?^_`{|}~-@example.com",
    "",
    "@example.com",
    "ada@",
    "ada",
    "a@b",
    "a@b.c",
    "a@b.co",
    "Postmaster@Example.com",
    "ABUSE@example.com",
    "Info@example.com",
    "a@" + ".".join(["xn--" + "3e0b707e" * 7] * 2) + ".com",
    "a@" + ".".join(["xn--" + "3e0b707e" * 7] * 3) + ".com",
    "a@XN--3E0B707E.com",
]


def answer(adapter: TypeAdapter[Any], value: Any) -> tuple[str, Any]:
    try:
        return "ok", adapter.validate_python(value)
    except ValidationError as exc:
        return "refused", [e["type"] for e in exc.errors()]


@pytest.mark.parametrize("value", EDGES)
def test_every_edge_is_answered_as_email_str_answers_it(value: str) -> None:
    assert answer(FAST, value) == answer(SLOW, value)


ATEXT = "abcXYZ019.!#$%&'*+/=?^_`{|}~-"
DOMAIN = "abcXYZ019.-"
addresses = st.builds(
    lambda local, domain, tld: f"{local}@{domain}{tld}",
    st.text(ATEXT + '"@ ä', min_size=0, max_size=70),
    st.text(DOMAIN + "ä_", min_size=0, max_size=70),
    st.sampled_from(["", ".com", ".COM", ".example", ".invalid", ".local", ".c", ".1", "."]),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(addresses, st.text(max_size=40)))
def test_any_address_is_answered_as_email_str_answers_it(value: str) -> None:
    assert answer(FAST, value) == answer(SLOW, value)


def test_a_plain_address_takes_the_fast_path_and_its_domain_is_checked_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields._domain.cache_clear()
    calls: list[str] = []
    real = fields.validate_email

    def counted(value: str, **kwargs: Any) -> Any:
        calls.append(value)
        return real(value, **kwargs)

    monkeypatch.setattr(fields, "validate_email", counted)
    for n in range(20):
        assert FAST.validate_python(f"user{n}@Fast.Example.com") == f"user{n}@fast.example.com"
    assert calls == ["a@Fast.Example.com"]


def test_a_non_string_is_refused_as_email_str_refuses_it() -> None:
    assert answer(FAST, 42) == answer(SLOW, 42)
    assert answer(FAST, None) == answer(SLOW, None)
