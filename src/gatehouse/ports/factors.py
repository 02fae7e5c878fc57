"""The second factors' repository port (DESIGN 3b): authenticator apps, recovery codes and
passkeys. Every spend (`use_totp_step`, `use_recovery_code`, `use_passkey`) is one conditional
write that says whether it won, so two requests racing with one code cannot both succeed."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gatehouse.domain.factors import Passkey, TotpFactor


class Factors(Protocol):
    async def totp(self, user_id: str) -> TotpFactor | None: ...
    async def put_totp(self, factor: TotpFactor) -> None:
        """A new app, pending, in place of a pending one (a confirmed one must be removed)."""

    async def confirm_totp(self, user_id: str, now: datetime, step: int) -> bool: ...
    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Accept `step` if it is newer than the last accepted one; False otherwise."""

    async def remove_totp(self, user_id: str) -> bool: ...
    async def rewrap_totp(self, user_id: str, secret_ciphertext: str) -> None: ...
    async def totp_page(self, after: str, limit: int) -> list[TotpFactor]:
        """Apps in user-id order after `after` (key rotation walks them all)."""

    async def replace_recovery_codes(
        self, user_id: str, code_hashes: list[str], now: datetime
    ) -> None: ...
    async def use_recovery_code(self, user_id: str, code_hash: str, now: datetime) -> bool: ...
    async def recovery_codes_left(self, user_id: str) -> int: ...
    async def add_passkey(self, passkey: Passkey) -> None: ...
    async def passkeys(self, user_id: str) -> list[Passkey]: ...
    async def passkey_by_credential(self, credential_id: str) -> Passkey | None: ...
    async def use_passkey(self, passkey_id: str, sign_count: int, now: datetime) -> bool:
        """Record a use whose counter went forward (or stays 0 for counterless keys)."""

    async def remove_passkey(self, user_id: str, passkey_id: str) -> bool: ...
    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool:
        """Give one of the user's passkeys a new name; False when the user has no such one."""

    async def methods(self, user_id: str) -> tuple[str, ...]:
        """Of `totp` (confirmed), `passkey`, `recovery_code` (any left): what the user has."""

    async def remove_all(self, user_id: str) -> None: ...
