"""Codes in Redis: one hash per (purpose, subject), checked and consumed by one Lua script.

Every verify of a code makes two calls here (`binding`, `check`). On redis-py's client they
were a third of the api's CPU a verify (its pool, its Python reply parsing, a socket write
each); given a `PipelinedRedis` (plain TCP) the store makes them on that shared connection
instead, and redis-py stays for the health check and for TLS or unix-socket URLs."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gatehouse.domain.codes import FAILURE_WINDOW_SECONDS, CodeCheck
from gatehouse.errors import Unavailable
from gatehouse.jobs.redis_pipeline import PipelinedRedis

# Atomic on the server: concurrent submissions of the right code see exactly one OK, and wrong
# tries are counted without lost updates. Comparing HMACs (not codes) needs no constant time:
# the attacker cannot compute the HMAC of a guess without the key.
# KEYS: the code, the subject's wrong-try counter, the receipt. A right code clears the counter;
# a wrong one spends a try of this code and counts against every later code within the failure
# window. A receipt (ARGV[3] = '1') is checked first: the same job presenting the same code
# again (its worker died after the check) is let through without touching the code.
_CHECK = """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return 'ok' end
local h = redis.call('HGET', KEYS[1], 'h')
if not h then return 'missing' end
if h == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  if ARGV[3] == '1' and tonumber(ARGV[4]) > 0 then
    redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
  end
  return 'ok'
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local left = redis.call('HINCRBY', KEYS[1], 'a', -1)
if left <= 0 then redis.call('DEL', KEYS[1]) return 'exhausted' end
return 'mismatch'
"""

_PUT = """
local left = tonumber(ARGV[2]) - tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('DEL', KEYS[1])
if left <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'a', left, 'b', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return left
"""

_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'a', ARGV[2], 'b', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisCodeStore:
    def __init__(
        self, redis: Redis, prefix: str = "gatehouse:code:", pipe: PipelinedRedis | None = None
    ):
        self._redis = redis
        self._pipe = pipe
        self._prefix = prefix
        self._check = redis.register_script(_CHECK)
        self._put = redis.register_script(_PUT)
        self._restore = redis.register_script(_RESTORE)

    @classmethod
    def connected(cls, redis: Redis, url: str, prefix: str = "gatehouse:code:") -> RedisCodeStore:
        """The store `bootstrap.build` makes: its calls on a pipelined connection to `url`
        where one can go (plain TCP), else on `redis`, which serves the health check either
        way. A Redis restarting is waited for up to 5 s before a call fails."""
        if not PipelinedRedis.supports(url):
            return cls(redis, prefix)
        pipe = PipelinedRedis(url, timeout=5.0, name="gatehouse-codes", coalesce=True)
        return cls(redis, prefix, pipe)

    async def aclose(self) -> None:
        if self._pipe is not None:
            await self._pipe.aclose()

    def _key(self, purpose: str, subject: str) -> str:
        # The subject is an HMAC chosen by the flow, so no personal data lands in key names.
        return f"{self._prefix}{purpose}:{subject}"

    async def put(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> int:
        keys = [self._key(purpose, subject), self._fails(purpose, subject)]
        return int(await self._run(self._put, keys, code_hash, attempts, ttl_seconds, binding))

    async def binding(self, purpose: str, subject: str) -> str | None:
        # The hash's `h` too: no code ("") is told from a code an earlier release put without
        # `b` (None). An expired hash is gone (EXPIRE), so a live field is a live code's.
        read = self._command("HMGET", self._key(purpose, subject), "h", "b")
        code, bound = await self._answer(read)
        if code is None:
            return ""
        if bound is None:
            return None
        return bound.decode() if isinstance(bound, bytes) else str(bound)

    async def restore(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        ttl_seconds: int,
        attempts: int,
        binding: str = "",
    ) -> None:
        keys = [self._key(purpose, subject)]
        await self._run(self._restore, keys, code_hash, attempts, ttl_seconds, binding)

    async def check(
        self,
        purpose: str,
        subject: str,
        code_hash: str,
        *,
        receipt: str | None = None,
        receipt_ttl_seconds: int = 0,
    ) -> CodeCheck:
        # The receipt is an HMAC chosen by the flow: fit for a key name.
        receipt_key = f"{self._prefix}receipt:{purpose}:{receipt or '-'}"
        keys = [self._key(purpose, subject), self._fails(purpose, subject), receipt_key]
        use = "1" if receipt else "0"
        args = (code_hash, FAILURE_WINDOW_SECONDS, use, max(receipt_ttl_seconds, 0))
        result = await self._run(self._check, keys, *args)
        return CodeCheck(result.decode() if isinstance(result, bytes) else result)

    def _fails(self, purpose: str, subject: str) -> str:
        return f"{self._prefix}fails:{purpose}:{subject}"

    def _command(self, *args: Any) -> Awaitable[Any]:
        if self._pipe is not None:
            return self._pipe.execute(*args)
        return self._redis.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py

    async def _run(self, script: Any, keys: list[str], *args: Any) -> Any:
        if self._pipe is not None:
            return await self._answer(self._pipe.evalsha(script, keys, args))
        return await self._answer(script(keys=keys, args=list(args)))

    @staticmethod
    async def _answer(call: Awaitable[Any]) -> Any:
        """Redis's answer to `call`; Redis away is Unavailable (the flows' 503)."""
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise Unavailable("Code store unavailable") from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable("Redis unavailable") from exc
