"""Sessions on the wire: refresh, logout and reauth bodies, the sessions list, the `sessions`
queue's job data."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StrictBool

from gatehouse.selfservice.fields import AccessToken, Body, JobData, Password, RefreshToken
from gatehouse.web.schemas import Out

SessionId = Annotated[str, Field(min_length=1, max_length=64)]


class RefreshIn(Body):
    refresh_token: RefreshToken


class LogoutIn(Body):
    refresh_token: RefreshToken
    everywhere: StrictBool = False


class ReauthIn(Body):
    """The password (with `code`, a TOTP or recovery code, when the account has a second
    factor), or a passkey assertion: `flow_id` (from `POST /api/auth/passkeys/login/options`)
    and `credential`."""

    password: Password | None = None
    code: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    flow_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    credential: dict[str, Any] | None = None


class SessionsListJob(JobData):
    token: AccessToken


class SessionRevokeJob(JobData):
    token: AccessToken
    session_id: SessionId


class SessionOut(Out):
    """One live session of the user (`selfservice.sessions.manage.session_view`)."""

    id: str
    created_at: AwareDatetime
    last_used_at: AwareDatetime
    user_agent: str | None
    amr: list[str]
    aal: int
    current: bool  # the session of the token that asked


class SessionsData(Out):
    """The `data` of GET /api/auth/sessions: the live sessions, newest first."""

    sessions: list[SessionOut]


class ReauthData(Out):
    """The `data` of a reauth: a new access token of the same session, `auth_time` now."""

    token: str
    token_type: Literal["Bearer"]
    expires_in: int
