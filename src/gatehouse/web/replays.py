"""Answers given again: a hot GET route's answer to one bearer token, replayed to the same
token while what the answer rests on still holds.

The profile read is the api's most frequent authenticated call, and once the signed-in cache
answers it (`selfservice/sessions/cache.py`) what is left is Python per request: verifying the
token's signature, building the view, serialising it, wrapping `send` in three layers (issue
17's profile: all of it together cost more than the server stack itself). An endpoint that
knows its answer depends on nothing but what a predicate watches marks the request
(`replayable`); `HotFront` records that answer (status 200, one body, no cookie), keyed by the
route and the exact Authorization header, and answers the next request with the same key from
it while the predicate holds, through the access log (a new request id, the same metrics, log
line and span) and nothing else.

The profile's predicate (`sessions.flow.Held.current`) holds while the token has not expired
and the signed-in cache still holds the very user the answer was made from, so everything that
empties that entry (a logout, a password change, an admin disable, a profile update, on any
node, or the invalidation channel falling silent: fail closed) ends the replay at the same
moment, and the next request takes the whole path again, signature check included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Message, Scope, Send

from gatehouse.observability.access_log import HEADER as REQUEST_ID
from gatehouse.observability.access_log import Headers

REPLAYABLE = "gatehouse.replayable"  # scope key: the predicate an endpoint set
Key = tuple[str, bytes]  # (path, the Authorization header as sent)


def replayable(request: Request, current: Callable[[], bool]) -> None:
    """Let this answer be given again to the same Authorization header while `current()`."""
    request.scope[REPLAYABLE] = current


@dataclass(frozen=True, slots=True)
class Replay:
    current: Callable[[], bool]
    status: int
    headers: Headers  # every header the answer had but its request id
    body: bytes


class Replays:
    """Recorded answers, at most `max_entries` and `max_bytes` (the first in line goes first).
    Each recording also looks at the first two in line: one that stopped holding goes, one that
    holds moves to the back, so an answer whose session ended (and the personal data in it)
    does not stay for long even if its token is never sent again."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 8 * 1024 * 1024):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: dict[Key, Replay] = {}
        self._bytes = 0

    def find(self, key: Key) -> Replay | None:
        replay = self._entries.get(key)
        if replay is None:
            return None
        if not replay.current():
            self._drop(key)
            return None
        return replay

    def recording(self, key: Key, scope: Scope, send: Send) -> Send:
        """`send`, keeping the answer for `key` if its endpoint marked it replayable."""
        status = 0  # 0 once the answer cannot be recorded: a body in parts
        headers: Headers = ()

        async def record(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = tuple(h for h in message.get("headers", ()) if h[0] != REQUEST_ID)
            elif message["type"] == "http.response.body":
                if message.get("more_body"):
                    status = 0
                else:
                    current = scope.get(REPLAYABLE)
                    if current is not None and status == 200 and _plain(headers) and current():
                        self._put(key, Replay(current, status, headers, message.get("body", b"")))
            await send(message)

        return record

    def _put(self, key: Key, replay: Replay) -> None:
        self._drop(key)
        for _ in range(2):
            self._sweep()
        size = _size(key, replay)
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))
        self._entries[key] = replay
        self._bytes += size

    def _sweep(self) -> None:
        oldest = next(iter(self._entries), None)
        if oldest is not None:
            replay = self._entries.pop(oldest)
            if replay.current():
                self._entries[oldest] = replay
            else:
                self._bytes -= _size(oldest, replay)

    def _drop(self, key: Key) -> None:
        replay = self._entries.pop(key, None)
        if replay is not None:
            self._bytes -= _size(key, replay)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the recorded keys and bodies hold (not their headers: a dozen pairs, the
        security headers' values shared by every answer)."""
        return self._bytes


def _size(key: Key, replay: Replay) -> int:
    return len(key[1]) + len(replay.body)


def _plain(headers: Headers) -> bool:
    # A cookie is set for one answer, never handed out again.
    return not any(name.lower() == b"set-cookie" for name, _ in headers)


# A key is the header as the api's clients send it: `Bearer <token>`, one space, a token no
# longer than the longest an api issues. Anything else (another spelling of the scheme, padding
# that the token's parsing strips, a header of any length a client picks) takes the whole path
# each time: otherwise one token could fill the store under as many keys and sizes as it likes.
BEARER = b"Bearer "
MAX_HEADER_BYTES = 2048


def key_of(scope: Scope) -> Key | None:
    """The request's key: its path and its (first) Authorization header, if that is plainly
    `Bearer <token>`; None otherwise."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            value = bytes(value)
            token = value[len(BEARER) :]
            plain = value.startswith(BEARER) and len(value) <= MAX_HEADER_BYTES
            if plain and token and b" " not in token and b"\t" not in token:
                return scope["path"], value
            return None
    return None
