"""The same field has the same limits at every door: an operation's HTTP body, its job's data and
(for users) the command-line import accept and refuse the same values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from gatehouse.admin.schemas import ImportedUser, imported
from gatehouse.domain.users import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN
from gatehouse.errors import InvalidInput
from gatehouse.selfservice.login.schemas import LoginIn, VerifyUserJob
from gatehouse.selfservice.profile.schemas import (
    DeleteUserJob,
    ProfileDeleteIn,
    ProfileUpdateIn,
    UpdateUserJob,
)
from gatehouse.selfservice.recovery.schemas import (
    ForgotIn,
    RecoveryRequestJob,
    RecoveryResetJob,
    ResetIn,
)
from gatehouse.selfservice.registration.schemas import CreateUserJob, RegisterIn, VerifyOtpIn

# (what the HTTP door takes, what the job door takes) for one operation. Sign-up is two HTTP
# calls (register, then verify-otp) and one job (create-user).
SAME_OPERATION: list[tuple[type[BaseModel], type[BaseModel]]] = [
    (RegisterIn, CreateUserJob),
    (VerifyOtpIn, CreateUserJob),
    (LoginIn, VerifyUserJob),
    (ProfileUpdateIn, UpdateUserJob),
    (ProfileDeleteIn, DeleteUserJob),
    (ForgotIn, RecoveryRequestJob),
    (ResetIn, RecoveryResetJob),
]


def field_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """Each field's schema. A field a job may leave out (`verify-user` takes `{email, password}`
    or its second step, `{mfa_token, code}`: the model requires one of the two) is compared by
    the schema of its value."""
    properties: dict[str, Any] = model.model_json_schema()["properties"]
    found = {}
    for name, schema in properties.items():
        options = schema.get("anyOf", [])
        if schema.get("default", ...) is None and len(options) == 2 and {"type": "null"} in options:
            schema = next(option for option in options if option != {"type": "null"})
        found[name] = {k: v for k, v in schema.items() if k != "title"}
    return found


@pytest.mark.parametrize(("http", "job"), SAME_OPERATION, ids=lambda m: m.__name__)
def test_an_operation_takes_the_same_fields_at_both_doors(
    http: type[BaseModel], job: type[BaseModel]
) -> None:
    http_fields, job_fields = field_schemas(http), field_schemas(job)
    shared = set(http_fields) & set(job_fields)
    assert shared, "the pair shares no field: not the same operation"
    for name in sorted(shared):
        assert http_fields[name] == job_fields[name], name


@pytest.mark.parametrize(("http", "job"), SAME_OPERATION, ids=lambda m: m.__name__)
def test_every_field_of_the_http_door_is_taken_by_the_job_door(
    http: type[BaseModel], job: type[BaseModel]
) -> None:
    # Sign-up's HTTP body carries no code, its verification no name: the job takes both.
    assert set(field_schemas(http)) <= set(field_schemas(job)) | {"everywhere"}


def test_new_passwords_follow_the_domain_policy_everywhere() -> None:
    for model, name in (
        (RegisterIn, "password"),
        (CreateUserJob, "password"),
        (ProfileUpdateIn, "password"),
        (UpdateUserJob, "password"),
        (ResetIn, "new_password"),
        (RecoveryResetJob, "new_password"),
    ):
        schema = field_schemas(model)[name]
        bounds = schema.get("anyOf", [schema])[0]
        assert (bounds["minLength"], bounds["maxLength"]) == (PASSWORD_MIN, PASSWORD_MAX)


def test_the_import_takes_names_and_phones_with_the_same_limits() -> None:
    imported_fields = field_schemas(ImportedUser)
    register = field_schemas(RegisterIn)
    assert imported_fields["email"] == register["email"]
    name = imported_fields["name"].get("anyOf", [imported_fields["name"]])[0]
    assert (name["minLength"], name["maxLength"]) == (1, NAME_MAX)
    assert imported_fields["phone"] == register["phone"]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"email": "not-an-email", "password_hash": "$2b$x"}, "email"),
        ({"email": "a@example.com", "password_hash": "$2b$x", "name": "n" * 201}, "name"),
        ({"email": "a@example.com", "password_hash": "$2b$x", "phone": "1" * 33}, "phone"),
        ({"password_hash": "$2b$x"}, "email"),
    ],
)
def test_an_import_record_over_a_limit_is_refused_naming_the_field(
    record: dict[str, Any], field: str
) -> None:
    refused = imported(record)
    assert isinstance(refused, InvalidInput)
    assert field in refused.message


def test_an_import_record_within_the_limits_passes_with_empty_columns_dropped() -> None:
    record = {"email": "Ada@Example.com", "password_hash": "$2b$x", "phone": "", "extra": "1"}
    assert imported(record) == {"email": "Ada@example.com", "password_hash": "$2b$x"}
