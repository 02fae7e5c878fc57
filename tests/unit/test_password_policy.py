"""The password policy: length in code points, the shipped common-password list, no composition
rules, and the flows refusing a common password with the reason."""

from __future__ import annotations

import dataclasses

import pytest

from gatehouse.domain.users import password_problem
from gatehouse.errors import InvalidInput
from gatehouse.security.password_list import load_common_passwords
from gatehouse.selfservice.context import FlowContext
from gatehouse.selfservice.registration import flow as registration


@pytest.fixture(scope="module")
def common() -> frozenset[str]:
    return load_common_passwords()


def test_the_shipped_list_holds_at_least_ten_thousand_passwords(common: frozenset[str]) -> None:
    assert len(common) >= 10_000
    assert {"password", "12345678", "iloveyou", "baseball"} <= common
    assert all(p == p.lower() for p in list(common)[:500])


@pytest.mark.parametrize("password", ["password", "PASSWORD", "Password", "12345678", "qwertyuiop"])
def test_common_passwords_are_refused_whatever_the_case(
    common: frozenset[str], password: str
) -> None:
    problem = password_problem(password, common)
    assert problem is not None
    assert "common" in problem


@pytest.mark.parametrize(
    "password",
    ["correct horse battery staple", "aaaaaaaaaaaaaaaaaaaa" + "b", "ünïcødé pässwörd", "8charsok"],
)
def test_no_composition_rules(common: frozenset[str], password: str) -> None:
    assert password_problem(password, common) is None


def test_sixty_four_characters_and_more_are_allowed(common: frozenset[str]) -> None:
    assert password_problem("x" * 64 + "y" * 64, common) is None


async def test_registration_refuses_a_common_password_with_the_reason(
    ctx: FlowContext, common: frozenset[str]
) -> None:
    strict = dataclasses.replace(ctx, common_passwords=common)
    with pytest.raises(InvalidInput) as refused:
        await registration.register(strict, name="A", email="a@example.com", password="iloveyou1")
    assert refused.value.errors[0]["field"] == "password"
    assert "common" in refused.value.errors[0]["message"]
