"""What of a job's result may rest in the queue (`results.at_rest`): every queue's result shape,
and the keys of flows still to come, without a token, a code, a secret or a full phone."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gatehouse.jobs.results import CREDENTIALS, REDACTED, at_rest, ok

PHONE = "+14155550123"
MASKED = "+1415\u2022\u2022\u20220123"
USER = {"id": "u1", "name": "Ada", "email": "ada@example.com", "phone": PHONE, "image": None}
SECRETS = ("eyJhbGciOiJFZERTQSJ9.access", "refresh-opaque-value", "mfa-0123", "JBSWY3DPEHPK3PXP")


def login_result() -> dict[str, Any]:
    data = {
        "token": SECRETS[0],
        "refresh_token": SECRETS[1],
        "token_type": "Bearer",
        "expires_in": 900,
        "user": USER,
    }
    return ok("Logged in successfully", data, "u1")


@pytest.mark.parametrize(
    ("queue", "result", "kept"),
    [
        (
            "verify-user",
            login_result(),
            {"token": REDACTED, "refresh_token": REDACTED, "token_type": "Bearer"},
        ),
        ("create-user", ok("User created", {"user": {**USER, "phone": MASKED}}, "u1"), {}),
        ("read-user", ok("Profile", {"user": USER}, "u1"), {}),
        ("update-user", ok("User updated successfully", {"user": USER}, "u1"), {}),
        ("delete-user", ok("User deleted", {"user_id": "u1"}, "u1"), {"user_id": "u1"}),
        ("verification", ok("Verification code sent", {"expires_in": 600}), {"expires_in": 600}),
        (
            "verify-user (second factor)",
            ok("Second factor required", {"mfa_required": True, "mfa_token": SECRETS[2]}),
            {"mfa_required": True, "mfa_token": REDACTED},
        ),
        (
            "mfa totp-setup",
            ok("TOTP", {"secret": SECRETS[3], "otpauth_uri": f"otpauth://totp/x?s={SECRETS[3]}"}),
            {"secret": REDACTED, "otpauth_uri": REDACTED},
        ),
        (
            "mfa recovery-codes",
            ok("Codes", {"recovery_codes": ["abcd-efgh", "ijkl-mnop"]}),
            {"recovery_codes": REDACTED},
        ),
        (
            "update-user (pending phone)",
            ok("Pending", {"user": USER, "phone_pending": PHONE, "expires_in": 600}, "u1"),
            {"phone_pending": MASKED},
        ),
    ],
)
def test_every_queues_result_rests_without_credentials(
    queue: str, result: dict[str, Any], kept: dict[str, Any]
) -> None:
    before = copy.deepcopy(result)
    stored = at_rest(result)
    assert result == before, queue  # the pushed result is left whole
    text = json.dumps(stored)
    for secret in (*SECRETS, PHONE, "abcd-efgh"):
        assert secret not in text, (queue, secret)
    assert stored["success"] is True and stored["message"] == result["message"]
    for key, value in kept.items():
        assert stored["data"][key] == value, (queue, key)
    if "user" in stored["data"]:
        assert stored["data"]["user"] == {**USER, "phone": MASKED}  # recognisable, not usable
    assert at_rest(stored) == stored  # stable: masking twice changes nothing


def test_credentials_are_found_at_any_depth_but_a_refusal_keeps_its_code() -> None:
    refused = {
        "success": False,
        "message": "Wrong code",
        "code": "invalid_code",
        "errors": [{"field": "otp", "message": "invalid"}],
        "data": {},
    }
    assert at_rest(refused) is refused  # nothing to hide: the same object, nothing copied
    nested = {"success": True, "message": "m", "token": "t", "data": {"a": [{"b": {"code": "1"}}]}}
    assert at_rest(nested) == {
        "success": True,
        "message": "m",
        "token": REDACTED,
        "data": {"a": [{"b": {"code": REDACTED}}]},
    }
    assert {"token", "refresh_token", "mfa_token", "secret", "recovery_codes"} <= CREDENTIALS


def test_a_result_with_nothing_to_hide_is_not_copied() -> None:
    noop = {"success": True, "message": "noop", "data": {}}
    assert at_rest(noop) is noop
    profile = ok("Profile", {"user": {**USER, "phone": None}}, "u1")
    assert at_rest(profile) is profile
