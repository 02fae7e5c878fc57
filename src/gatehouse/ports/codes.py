"""Where one-time codes live between their sending and their check (`security.redis_codes` and
`security.memory` fulfil it)."""

from __future__ import annotations

from typing import Protocol

from gatehouse.domain.codes import CodeCheck


class CodeStore(Protocol):
    """Holds the HMAC of each live code with its remaining tries; checks are atomic."""

    async def put(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> int:
        """Store a new code; its tries are `attempts` less the subject's recent wrong tries.
        Returns them; 0 means none are left and no code was stored. `binding` is kept beside the
        code (see `binding`)."""

    async def binding(self, purpose: str, subject: str) -> str | None:
        """What the subject's live code was put with as `binding`, so a check can compute the
        code's bound HMAC without first looking up what it was issued for: "" for a code put
        without one, and for no live code (a check then answers MISSING, as it would). None
        only for a live code put before codes kept their binding. A hint, never trusted: the
        HMAC covers the binding, so a wrong one fails the check."""

    async def check(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        *,
        receipt: str | None = None,
        receipt_ttl_seconds: int = 0,
    ) -> CodeCheck:
        """Consumes the code on success; a wrong code spends one try, the last try kills it.

        With `receipt` (an opaque HMAC of the code and of who presents it), a success leaves the
        receipt behind for `receipt_ttl_seconds`, and a later check with the same receipt is OK
        again though the code is spent: the same job, run again after its worker died."""

    async def restore(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> None:
        """Put back a consumed code (and its binding) when the step that followed could not be
        completed."""

    async def ping(self) -> None: ...
