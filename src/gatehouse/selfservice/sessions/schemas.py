"""Sessions on the wire: refresh and logout bodies."""

from __future__ import annotations

from pydantic import StrictBool

from gatehouse.selfservice.fields import Body, RefreshToken


class RefreshIn(Body):
    refresh_token: RefreshToken


class LogoutIn(Body):
    refresh_token: RefreshToken
    everywhere: StrictBool = False
