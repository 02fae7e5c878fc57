"""The audit trail's records and their hash chain (docs/audit.md).

A flow stages an `AuditEntry` (who, what, on whom, when, from where, with what outcome); it is
written with the change, in its transaction, as an `AuditRecord` numbered in insertion order
(`id`). The chainer (the relay role) then gives waiting records, in that order, the next
positions (`seq`) of the database's one chain: each record's `hash` is SHA-256 over the previous
record's hash and a canonical encoding of its own fields, position included. Changing a field,
removing a record or moving one breaks the chain at that point, and `ChainCheck` names the first
place it does not hold. Retention removes the oldest records and keeps a `Checkpoint`: the
position and hash of the last one removed, where verification then starts.

Nothing secret belongs in a record, and only `detail` is free text: `scrub` blanks what looks
like a phone number, a code or a token in it before it is stored."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

USER, ADMIN, SYSTEM = "user", "admin", "system"  # who acted
GENESIS = "0" * 64  # the "previous hash" of the first record
VERSION = "gatehouse-audit-v1"  # the first element of every canonical encoding
DETAIL_MAX = 200
REDACTED = "[redacted]"
# Six digits or more (a code, a phone number however it is spelled), and long tokens that mix
# letters and digits (access and refresh tokens, keys, ciphertexts).
_DIGITS = re.compile(r"\+?\d(?:[\s().-]{0,2}\d){5,}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")


def scrub(text: str | None) -> str | None:
    """`text` without anything that looks like a secret or a phone number, at most 200 chars."""
    if text is None:
        return None
    text = _DIGITS.sub(REDACTED, text)
    text = _TOKEN.sub(lambda m: REDACTED if re.search(r"\d", m.group()) else m.group(), text)
    return text[:DETAIL_MAX]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, as a flow stages it; its place in the chain comes when it is written."""

    at: datetime
    actor: str
    action: str
    outcome: str
    actor_id: str | None = None
    user_id: str | None = None
    factor: str | None = None
    detail: str | None = None
    client_address: str | None = None


def entry(
    at: datetime,
    action: str,
    outcome: str,
    *,
    actor: str = USER,
    actor_id: str | None = None,
    user_id: str | None = None,
    factor: str | None = None,
    detail: str | None = None,
    client_address: str | None = None,
) -> AuditEntry:
    """An entry with its free text scrubbed and its fields cut to their columns."""
    if actor not in (USER, ADMIN, SYSTEM):
        raise ValueError(f"unknown actor {actor!r}")
    if at.tzinfo is None:
        raise ValueError("naive datetime given to an audit entry")
    return AuditEntry(
        at=at.astimezone(UTC),
        actor=actor,
        action=action[:64],
        outcome=outcome[:32],
        actor_id=None if actor_id is None else actor_id[:64],
        user_id=user_id,
        factor=None if factor is None else factor[:32],
        detail=scrub(detail),
        client_address=None if client_address is None else client_address[:64],
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record as stored (the `audit_log` table's columns, in this order); `seq`, `prev_hash`
    and `hash` are None until the chainer has linked it."""

    id: int
    seq: int | None
    at: datetime
    actor: str
    action: str
    outcome: str
    actor_id: str | None
    user_id: str | None
    factor: str | None
    detail: str | None
    client_address: str | None
    prev_hash: str | None
    hash: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "seq": self.seq,
            "at": iso(self.at),
            "actor": self.actor,
            "actor_id": self.actor_id,
            "action": self.action,
            "user_id": self.user_id,
            "outcome": self.outcome,
            "factor": self.factor,
            "detail": self.detail,
            "client_address": self.client_address,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The position and hash of the newest record (`audit_head`): the chain's end, kept apart
    from the records so that removing the newest ones is seen too."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where retention stopped: the last record it removed (verification starts after it)."""

    seq: int
    hash: str
    at: datetime
    removed: int


def iso(moment: datetime) -> str:
    """The one spelling of a time in the encoding: UTC, microseconds, `Z`. (isoformat writes
    what strftime("%Y-%m-%dT%H:%M:%S.%fZ") did, from year 1000, in 60 % of its time.)"""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical(seq: int, e: AuditEntry | AuditRecord) -> bytes:
    """The fields a record's hash covers, as compact JSON in a fixed order."""
    fields = [
        VERSION,
        seq,
        iso(e.at),
        e.actor,
        e.actor_id,
        e.action,
        e.user_id,
        e.outcome,
        e.factor,
        e.detail,
        e.client_address,
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, seq: int, e: AuditEntry | AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(seq, e)).hexdigest()


def waiting(record_id: int, e: AuditEntry) -> AuditRecord:
    """An entry as written with its change: numbered, not linked yet."""
    return AuditRecord(
        record_id,
        None,
        e.at,
        e.actor,
        e.action,
        e.outcome,
        e.actor_id,
        e.user_id,
        e.factor,
        e.detail,
        e.client_address,
        None,
        None,
    )


def chain(head: ChainHead, unlinked: list[AuditRecord]) -> list[AuditRecord]:
    """The records, in the order given, as the links that follow `head`."""
    linked: list[AuditRecord] = []
    seq, prev = head.seq, head.hash
    for record in unlinked:
        seq += 1
        digest = link_hash(prev, seq, record)
        linked.append(replace(record, seq=seq, prev_hash=prev, hash=digest))
        prev = digest
    return linked


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the chain does not hold: a record position and what is wrong there."""

    seq: int
    problem: str  # altered | missing | broken_link | head_mismatch
    detail: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}: {self.detail}"


class ChainCheck:
    """Feed records in `seq` order from the start (or a checkpoint); the first `Break` found is
    kept and every later record ignored. `finish` compares the end with the head."""

    def __init__(self, start: ChainHead = ChainHead(0, GENESIS)):
        self.start = start
        self.last = start
        self.count = 0
        self.broken: Break | None = None

    def feed(self, record: AuditRecord) -> Break | None:
        if self.broken is not None:
            return self.broken
        expected = self.last.seq + 1
        seq = expected if record.seq is None else record.seq
        digest = None if record.prev_hash is None else link_hash(record.prev_hash, seq, record)
        if seq != expected:
            self.broken = Break(
                expected,
                "missing",
                f"records {expected}..{seq - 1} are not there (removed)"
                if seq > expected + 1
                else f"record {expected} is not there (removed)",
            )
        elif digest is None or record.seq is None or digest != record.hash:
            self.broken = Break(
                seq, "altered", "its fields do not hash to its hash (edited or moved)"
            )
        elif record.prev_hash != self.last.hash:
            self.broken = Break(
                seq,
                "broken_link",
                f"its prev_hash is not the hash of record {self.last.seq} "
                "(a record before it was edited and re-hashed, removed or re-ordered)",
            )
        else:
            self.last = ChainHead(seq, digest)
            self.count += 1
        return self.broken

    def finish(self, head: ChainHead) -> Break | None:
        if self.broken is not None:
            return self.broken
        if head.seq > self.last.seq:
            first = self.last.seq + 1
            self.broken = Break(
                first, "missing", f"the head says the chain ends at {head.seq} (removed)"
            )
        elif head.seq < self.last.seq or head.hash != self.last.hash:
            self.broken = Break(
                self.last.seq, "head_mismatch", "the head does not name the last record"
            )
        return self.broken
