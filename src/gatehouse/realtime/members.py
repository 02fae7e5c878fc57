"""The sockets of one api node that connected with a token, each tied to its session: the rooms
it joined (`user:<id>`, `session:<sid>`), its token's deadline, and how it ends.

A socket ends when its session is revoked (a `session.revoked` push that this node delivers) or
when its access token expires. Ending takes it out of its rooms at once, in the same step as the
decision, so that nothing pushed afterwards reaches it; the disconnection follows in a task.

A revocation of every session of a user (`session.revoked` to `user:<id>` without a session id)
must not end a session opened after it: the user may sign in again at once and connect before a
slow node hears the revocation. Each emit published on Redis carries the time it was published
(`sent_at`, notifier.py). Sockets whose token was checked well before that time end; sockets
checked well after it stay (and do not hear it); those checked within `SKEW` of it (clocks of
two hosts differ a little) leave their rooms while their session is read from the database,
then hear it and end if the session is over, or come back to their rooms if it is live."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

NAMESPACE = "/"
REVOKED = "session.revoked"
SKEW = 5.0  # seconds two hosts' clocks may differ (the same allowance as tokens' not-before)
REMEMBER = 60.0  # seconds a revocation is kept for the connections being checked as it came
REMEMBERED_MAX = 10_000
CHECK_SECONDS = 5.0  # a session check that takes longer counts as revoked: fail closed
CLOSE_SECONDS = 5.0  # for the client to take its last packets before its transport is closed
CONNECTING_SECONDS = 2.0  # for a connect handler that already joined to finish

Live = Callable[[str, str], Awaitable[bool]]  # (user id, session id) -> is the session live


@dataclass(eq=False)
class Member:
    sid: str
    user_id: str
    session_id: str
    checked_at: float  # wall clock when its token was checked against the database
    expires: datetime  # its access token's expiry: the socket ends then
    timer: asyncio.TimerHandle | None = None
    ended: bool = False
    renewing: bool = False

    @property
    def rooms(self) -> tuple[str, str]:
        return f"user:{self.user_id}", f"session:{self.session_id}"


@dataclass
class Revocation:
    """What one `session.revoked` delivery does here: `told` have left the rooms and hear it
    through their own sid; `skip` stay in the room and do not hear it. Afterwards `ending` are
    disconnected and `suspects` (out of the rooms, not told yet) checked: told and disconnected
    if their session is over, back in their rooms if not."""

    told: list[str]
    skip: list[str]
    ending: list[Member]
    suspects: list[Member]
    payload: Any = None


class Verdict(enum.Enum):
    JOINED = "joined"
    REVOKED = "revoked"  # the session was revoked while the token was being checked
    RECHECK = "recheck"  # every session of the user was, maybe before this one began


@dataclass(frozen=True, slots=True)
class _Heard:
    at: float  # monotonic time it was delivered here
    user_id: str  # "" when only the session is known (`session:<sid>`)
    session_id: str | None  # None: every session of the user


class Members:
    """One per Socket.IO server. Every method but `close` and the tasks it starts runs without
    yielding to the event loop, so a decision and what it changes cannot be interleaved with a
    delivery."""

    def __init__(self) -> None:
        self.server: Any = None  # the socketio.AsyncServer, once built
        self.live: Live | None = None
        self.clock: Callable[[], datetime] | None = None
        self._by_sid: dict[str, Member] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_session: dict[str, set[str]] = {}
        self._heard: deque[_Heard] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    def configure(self, *, live: Live, clock: Callable[[], datetime]) -> None:
        self.live, self.clock = live, clock

    def get(self, sid: str) -> Member | None:
        return self._by_sid.get(sid)

    def join(self, member: Member, since: float) -> Verdict:
        """Enter the socket's rooms and start its deadline, unless a revocation touching it was
        delivered here after `since` (monotonic), when its token was being checked: the check
        may have read the session before the revocation was committed."""
        for heard in reversed(self._heard):
            if heard.at < since:
                break
            if heard.session_id == member.session_id:
                return Verdict.REVOKED
            if heard.session_id is None and heard.user_id == member.user_id:
                return Verdict.RECHECK
        for room in member.rooms:
            self.server.manager.basic_enter_room(member.sid, NAMESPACE, room)
        self._by_sid[member.sid] = member
        self._by_user.setdefault(member.user_id, set()).add(member.sid)
        self._by_session.setdefault(member.session_id, set()).add(member.sid)
        self._arm(member)
        return Verdict.JOINED

    def renew(self, member: Member, expires: datetime) -> bool:
        """A newer token of the same session: the deadline moves to its expiry."""
        if member.ended or self._by_sid.get(member.sid) is not member:
            return False
        member.expires = expires
        self._arm(member)
        return True

    def leave(self, sid: str) -> None:
        """The socket disconnected (for whatever reason): forget it, stop its timer."""
        member = self._by_sid.pop(sid, None)
        if member is not None:
            member.ended = True
            self._unindex(member)

    def revoking(
        self, event: Any, payload: Any, room: Any, sent_at: Any = None
    ) -> Revocation | None:
        """Called before an emit is delivered here: for a `session.revoked` to `session:<sid>`
        or `user:<id>`, which sockets end (out of their rooms now), which are checked, which
        must not hear it. None for every other emit."""
        if event != REVOKED or not isinstance(room, str):
            return None
        named = payload.get("session_id") if isinstance(payload, dict) else None
        session = named if isinstance(named, str) and named not in ("", "*") else None
        if room.startswith("session:"):
            user, session = "", room.removeprefix("session:")
        elif room.startswith("user:"):
            user = room.removeprefix("user:")
        else:
            return None
        self._remember(user, session)
        if session is not None:
            ending = list(self._members(self._by_session.get(session, ())))
            suspects: list[Member] = []
            skip: list[str] = []
        else:
            ending, suspects, skip = self._split(user, _timestamp(sent_at))
        for member in ending:
            self._end(member)
        for member in suspects:
            self._leave_rooms(member)
        return Revocation([m.sid for m in ending], skip, ending, suspects, payload)

    def finish(self, revocation: Revocation) -> None:
        """After the revocation was delivered: disconnect the ended sockets, check the others."""
        for member in revocation.ending:
            self._spawn(self._disconnect(member.sid))
        for member in revocation.suspects:
            self._spawn(self._check(member, revocation.payload))

    async def close(self) -> None:
        """At shutdown: no timer fires and no task outlives the server."""
        for member in self._by_sid.values():
            if member.timer is not None:
                member.timer.cancel()
                member.timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inside -----------------------------------------------------------------------------

    def _split(self, user: str, revoked_at: float) -> tuple[list[Member], list[Member], list[str]]:
        ending: list[Member] = []
        suspects: list[Member] = []
        skip: list[str] = []
        for member in self._members(self._by_user.get(user, ())):
            if member.checked_at < revoked_at - SKEW:
                ending.append(member)
            elif member.checked_at <= revoked_at + SKEW:
                suspects.append(member)
            else:
                skip.append(member.sid)  # a session opened after the revocation
        return ending, suspects, skip

    def _members(self, sids: Iterable[str]) -> Iterator[Member]:
        for sid in list(sids):
            member = self._by_sid.get(sid)
            if member is not None and not member.ended:
                yield member

    def _remember(self, user: str, session: str | None) -> None:
        now = time.monotonic()
        while self._heard and (
            self._heard[0].at < now - REMEMBER or len(self._heard) >= REMEMBERED_MAX
        ):
            self._heard.popleft()
        self._heard.append(_Heard(now, user, session))

    def _arm(self, member: Member) -> None:
        if member.timer is not None:
            member.timer.cancel()
        assert self.clock is not None, "configure() first"
        delay = (member.expires - self.clock()).total_seconds()
        loop = asyncio.get_running_loop()
        member.timer = loop.call_later(max(delay, 0.0), self._expire, member.sid)

    def _expire(self, sid: str) -> None:
        member = self._by_sid.get(sid)
        if member is not None and not member.ended:
            member.timer = None
            self._end(member)
            self._spawn(self._disconnect(sid))

    def _end(self, member: Member) -> None:
        member.ended = True
        self._leave_rooms(member)
        self._unindex(member)

    def _leave_rooms(self, member: Member) -> None:
        for room in member.rooms:
            self.server.manager.basic_leave_room(member.sid, NAMESPACE, room)

    def _unindex(self, member: Member) -> None:
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None
        for index, key in ((self._by_user, member.user_id), (self._by_session, member.session_id)):
            sids = index.get(key)
            if sids is not None:
                sids.discard(member.sid)
                if not sids:
                    del index[key]

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, member: Member, payload: Any) -> None:
        live = False
        if self.live is not None:
            try:
                live = await asyncio.wait_for(
                    self.live(member.user_id, member.session_id), CHECK_SECONDS
                )
            except Exception as exc:  # the database is away: the socket ends
                log.warning("socket session check failed: %s", type(exc).__name__)
        if member.ended or self._by_sid.get(member.sid) is not member:
            return  # ended by another revocation, its deadline, or gone
        manager = self.server.manager
        if live and manager.eio_sid_from_sid(member.sid, NAMESPACE) is not None:
            for room in member.rooms:
                manager.basic_enter_room(member.sid, NAMESPACE, room)
            return
        self._end(member)
        # To its sid alone, on this node: the revocation it was not told when it was delivered.
        await self.server.emit(
            REVOKED, payload, to=member.sid, namespace=NAMESPACE, ignore_queue=True
        )
        await self._disconnect(member.sid)

    async def _disconnect(self, sid: str) -> None:
        server = self.server
        manager = server.manager
        # A socket ended while its connect handler was finishing is not connected yet, and
        # python-socketio would ignore its disconnection. It has no event to wait on.
        deadline = time.monotonic() + CONNECTING_SECONDS
        while manager.is_pre_connected(sid, NAMESPACE) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        eio_sid = manager.eio_sid_from_sid(sid, NAMESPACE)
        transport = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
        await server.disconnect(sid, namespace=NAMESPACE, ignore_queue=True)
        if transport is None:
            return
        # python-socketio ends the namespace only, and Engine.IO's close sends a CLOSE packet
        # and leaves the websocket to the client: one that ignores both would stay connected
        # (and could connect the namespace again on it). Closed here, after what was queued.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.eio.disconnect(eio_sid), CLOSE_SECONDS)
        queue = getattr(transport, "queue", None)
        if getattr(transport, "upgraded", False) and queue is not None:
            queue.put_nowait(None)  # the websocket's writer stops there and closes it


def _timestamp(sent_at: Any) -> float:
    """When the revocation was published; now if the emit did not say (embedded, or an older
    publisher), which is then also when it was made."""
    if isinstance(sent_at, int | float) and not isinstance(sent_at, bool):
        return float(sent_at)
    return time.time()
