"""What an imported user record may hold: the same field limits as the HTTP and job doors."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatehouse.errors import InvalidInput
from gatehouse.selfservice.fields import Email, Name, Phone


class ImportedUser(BaseModel):
    """One record of `gatehouse users import`. Exports carry other columns (ignored), and CSV
    gives every value as text, so this model is not strict about types."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    password_hash: Annotated[str, Field(min_length=1, max_length=1024)]
    name: Name | None = None
    phone: Phone | None = None
    email_verified: bool | str | None = None


def imported(record: Any) -> dict[str, Any] | InvalidInput:
    """The record as the import expects it, or the refusal that names its bad fields."""
    if not isinstance(record, dict):
        return InvalidInput("A record must be an object")
    cleaned = {k: v for k, v in record.items() if v not in (None, "")}
    try:
        return ImportedUser.model_validate(cleaned).model_dump(exclude_none=True)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        return InvalidInput(f"invalid {fields}")
