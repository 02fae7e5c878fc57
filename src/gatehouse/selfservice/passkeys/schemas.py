"""Passkeys on the wire: the ceremony bodies and answers. Options and credentials are the
WebAuthn Level 3 JSON forms (`PublicKeyCredentialCreationOptionsJSON`, `RegistrationResponseJSON`,
`PublicKeyCredentialRequestOptionsJSON`, `AuthenticationResponseJSON`): free JSON objects here,
checked field by field by the ceremony, so a browser's `toJSON()` passes through as it is."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, Field

from gatehouse.selfservice.fields import Body
from gatehouse.selfservice.login.schemas import LoginData
from gatehouse.web.schemas import Out

FlowId = Annotated[str, Field(min_length=1, max_length=128)]
PasskeyId = Annotated[str, Field(min_length=1, max_length=64)]
PasskeyName = Annotated[str, Field(max_length=64)]
MfaToken = Annotated[str, Field(min_length=1, max_length=512)]
# What a browser's PublicKeyCredential.toJSON() gives; the 64 KiB body limit bounds it.
Credential = Annotated[
    dict[str, Any],
    Field(
        description="The authenticator's answer in its WebAuthn JSON form "
        "(`RegistrationResponseJSON` or `AuthenticationResponseJSON`: base64url strings)"
    ),
]


class RegisterIn(Body):
    flow_id: FlowId
    credential: Credential
    name: PasskeyName | None = None  # "Passkey" when left out


class LoginOptionsIn(Body):
    """Passwordless: `{}`. The second step of a password sign-in: `{mfa_token}`, and the
    options allow that account's passkeys only."""

    mfa_token: MfaToken | None = None


class LoginIn(Body):
    flow_id: FlowId
    credential: Credential


class OptionsData(Out):
    """A ceremony started: its flow (single use, 5 minutes) and the options for
    `navigator.credentials.create()` or `.get()` in their JSON form."""

    flow_id: str
    options: dict[str, Any]


class PasskeyOut(Out):
    """One passkey of the account (`selfservice.passkeys.flow.passkey_view`)."""

    id: str
    name: str
    created_at: AwareDatetime
    last_used_at: AwareDatetime | None


class PasskeyData(Out):
    """The new passkey; with it, when it is the account's first second factor, the ten recovery
    codes (shown this once)."""

    passkey: PasskeyOut
    recovery_codes: list[str] | None = None


class PasskeysData(Out):
    """The account's passkeys, oldest first."""

    passkeys: list[PasskeyOut]


# A passkey sign-in answers exactly as a password sign-in does.
SignedInData = LoginData
