"""argon2id password hashing on a bounded thread pool, so hashing never blocks the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gatehouse.domain.users import has_password, normalize_password

# Hashes imported from legacy systems: verified once, then re-hashed to argon2id at that login.
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def _bcrypt_matches(password_hash: str, password: str) -> bool:
    # bcrypt only ever used the first 72 bytes; legacy hashes were made that way, so compare so.
    try:
        return bcrypt.checkpw(password.encode()[:72], password_hash.encode())
    except ValueError:  # malformed hash
        return False


class Argon2Hasher:
    """argon2id with parameters in the hash string, so old hashes verify and get upgraded.

    The pool has one thread per allowed concurrent hash (argon2-cffi releases the GIL), which
    caps memory at workers x 19 MiB and queues the rest instead of thrashing the CPU.
    `observe` is given the seconds each hash or check took on the pool (its wait not counted)."""

    def __init__(
        self,
        *,
        memory_kib: int,
        time_cost: int,
        parallelism: int,
        workers: int,
        observe: Callable[[float], None] | None = None,
    ):
        self._argon = Argon2(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="argon2")
        self._observe = observe
        # A real hash of a random password: verifying against it costs what a real check costs.
        self._decoy = self._argon.hash("gatehouse-decoy-password")

    async def _run(self, fn: Callable[..., object], *args: str) -> object:
        loop = asyncio.get_running_loop()
        if self._observe is not None:
            return await loop.run_in_executor(self._pool, self._timed, fn, *args)
        return await loop.run_in_executor(self._pool, fn, *args)

    def _timed(self, fn: Callable[..., object], *args: str) -> object:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            assert self._observe is not None
            self._observe(time.perf_counter() - start)

    async def hash(self, password: str) -> str:
        result = await self._run(self._argon.hash, normalize_password(password))
        assert isinstance(result, str)
        return result

    def _verify_sync(self, password_hash: str, password: str) -> tuple[bool, bool]:
        if password_hash.startswith(BCRYPT_PREFIXES):
            matches = _bcrypt_matches(password_hash, normalize_password(password))
            return matches, matches
        if not has_password(password_hash):
            # An account without a password (`NO_PASSWORD`): refused in a real check's time, so
            # it answers a sign-in exactly as a wrong password does.
            self._spend(password)
            return False, False
        try:
            self._argon.verify(password_hash, normalize_password(password))
        except InvalidHashError:  # not a hash at all: refused in a real check's time too
            self._spend(password)
            return False, False
        except (VerifyMismatchError, VerificationError):
            return False, False
        return True, self._argon.check_needs_rehash(password_hash)

    def _spend(self, password: str) -> None:
        """One real argon2 check, of the decoy: its time, never a match."""
        with contextlib.suppress(VerificationError):
            self._argon.verify(self._decoy, normalize_password(password))

    async def verify(self, password_hash: str, password: str) -> tuple[bool, bool]:
        result = await self._run(self._verify_sync, password_hash, password)
        assert isinstance(result, tuple)
        return result

    async def burn(self, password: str) -> None:
        await self.verify(self._decoy, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
