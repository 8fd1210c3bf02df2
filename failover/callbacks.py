"""Callers cut off by a failure: their call-back records, and whether to call back.

When a call ends without a goodbye (its audio stopped, or our answer was never
acknowledged), the call layer hands `Callbacks.cut_off` what it knows: the number,
the trunk and its health, where in the flow the caller was. So does the node that
takes over the calls of a hotline node that died (`cause` "node"). The server calls
back only when all of these hold, since a caller ID can be forged and a call-back costs
money:

- call-backs are enabled;
- the failure was ours: the node carrying the call died, or the call's trunk was
  failing (SUSPECT, DOWN or RECOVERING) when the call ended. A cut-off on a healthy
  trunk is the caller's own line, or someone provoking one;
- the number is digits and matches `callback.numbers`;
- it was not called back within `per_number_s`, and fewer than `per_hour` call-backs
  were placed in the last hour (both counted in Redis, across nodes).

Otherwise, or when the call-back fails, staff get a ticket to call the caller. Nothing
is dropped silently: the record says which, and why.

A call has one call-back record at most: its id is drawn from the call's
(`callback_id`), and `cut_off` on a call that has one returns it unchanged, so a cut-off
handled twice (a node that took over a dead node's calls died in turn) calls back once.

Keys (``{p}`` is the prefix):

    {p}:callback:{id}          string, JSON CallbackRecord; expires after RETENTION_S
    {p}:callbacks:due          sorted set of ids waiting, by due time
    {p}:callbacks:claimed      sorted set of ids a node is calling, by when its claim
                               lapses: renewed while the node works on it, so a call-back
                               whose node died is claimed again by another
    {p}:callbacks              sorted set of every id, by cut-off time
    {p}:callback:number:{n}    string: number n had a call-back; expires per_number_s
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.client import Pipeline

from failover.config import CallbackSettings
from trunks.replicated import execute

RETENTION_S = 30 * 86400
CLAIM_S = 15.0
"""A node's claim on a call-back lapses this long after its last renewal."""
FAILING_STATES = frozenset({"suspect", "down", "recovering"})
"""Trunk states (at the end of a cut-off call) that make it a trunk failure."""
DIGITS = re.compile(r"\+?[0-9]+")
TRUNK, NODE = "trunk", "node"
"""Causes of a cut-off: the call's trunk failed, or the hotline node carrying it died."""


@dataclass
class CallbackRecord:
    id: str
    call_id: str
    number: str
    trunk: str
    path: list[str]
    """The flow's nodes the caller had visited; the last is where they were cut off."""
    reason: str
    cut_at: float
    trunk_state: str | None = None
    """The trunk's health when the call ended (down: the likely cause)."""
    status: str = "pending"
    """pending, calling, answered, failed, ticket."""
    due_at: float | None = None
    why: str = ""
    """Why it is a ticket rather than a call-back, or why the call-back failed."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    callback_call: str | None = None
    ticket: str | None = None
    cause: str = TRUNK
    """TRUNK or NODE: what failed under the call."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CallbackRecord:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
    if #ids >= tonumber(ARGV[3]) then break end
    table.insert(ids, id)
end
for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids
"""
"""Claim (until ARGV[2]) up to ARGV[3] call-backs: lapsed claims first, then those due."""


class Callbacks:
    """Decides and keeps call-backs; thread-safe (Redis does the claiming)."""

    def __init__(self, client: redis.Redis, settings: CallbackSettings, prefix: str = "hotline",
                 clock: Callable[[], float] = time.time, replicas: int = 0,
                 replica_wait_ms: int = 100) -> None:
        """`replicas`: how many replicas must confirm a saved call-back
        (`trunks.replicated`; else `save` raises)."""
        self.replicas, self.replica_wait_ms = replicas, replica_wait_ms
        self.redis = client
        self.settings = settings
        self.prefix = prefix
        self.clock = clock
        self._numbers = re.compile(settings.numbers)
        self._claim = client.register_script(_CLAIM)

    def cut_off(self, record: CallbackRecord) -> CallbackRecord:
        """Keep `record` as a call-back due later, or mark it for a ticket (status
        "ticket", with `why`); returns it as saved. If the call already has its
        call-back record, that is returned as it is."""
        existing = self.get(record.id)
        if existing is not None:
            return existing
        why = self._refusal(record)
        if why is None:
            record.due_at = self.clock() + self.settings.delay_s
        else:
            record.status, record.why = "ticket", why
        self.save(record)
        return record

    def _refusal(self, record: CallbackRecord) -> str | None:
        """Why `record` gets a ticket rather than a call-back; None: call back."""
        settings = self.settings
        if not settings.enabled:
            return "call-backs are disabled"
        if record.cause == TRUNK and record.trunk_state not in FAILING_STATES:
            return (f"trunk {record.trunk} was {record.trunk_state or 'unknown'}, so the "
                    "caller's own line dropped; call-backs follow trunk failures only")
        if not DIGITS.fullmatch(record.number) or not self._numbers.fullmatch(record.number):
            return f"the number {record.number!r} is not one we call back (callback.numbers)"
        number = record.number.lstrip("+")
        if settings.per_number_s and not self.redis.set(
                self._key(f"callback:number:{number}"), record.id, nx=True,
                px=int(settings.per_number_s * 1000)):
            return f"the number was called back within the last {settings.per_number_s:g} s"
        hour = self._key(f"callbacks:hour:{int(self.clock() // 3600)}")
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(hour)
        pipe.expire(hour, 7200)
        if int(pipe.execute()[0]) > settings.per_hour:
            return f"more than {settings.per_hour} call-backs this hour (callback.per_hour)"
        return None

    def save(self, record: CallbackRecord) -> None:
        """Save `record`; one no longer "calling" is no longer claimed (a "pending" one is
        due again)."""
        def build(pipe: Pipeline) -> None:
            pipe.set(self._key(f"callback:{record.id}"), record.to_json(), ex=RETENTION_S)
            pipe.zadd(self._key("callbacks"), {record.id: record.cut_at})
            if record.status == "pending" and record.due_at is not None:
                pipe.zadd(self._key("callbacks:due"), {record.id: record.due_at})
            if record.status != "calling":
                pipe.zrem(self._key("callbacks:claimed"), record.id)
            pipe.zremrangebyscore(self._key("callbacks"), 0, self.clock() - RETENTION_S)

        execute(self.redis, build, self.replicas, self.replica_wait_ms)

    def claim_due(self, limit: int = 10) -> list[CallbackRecord]:
        """Call-backs this node takes now, for `CLAIM_S` unless renewed: those due, and
        those whose claim lapsed (the node calling died). A call-back is claimed by one
        node at a time."""
        now = self.clock()
        ids = cast(list[str], self._claim(
            keys=[self._key("callbacks:due"), self._key("callbacks:claimed")],
            args=[now, now + CLAIM_S, limit]))
        claimed = []
        for callback_id in ids:
            record = self.get(callback_id)
            if record is None:  # expired: nothing left to call
                self.redis.zrem(self._key("callbacks:claimed"), callback_id)
            else:
                claimed.append(record)
        return claimed

    def renew(self, ids: list[str]) -> None:
        """Renew this node's claims on call-backs `ids` for another `CLAIM_S`."""
        if ids:
            expiry = self.clock() + CLAIM_S
            self.redis.zadd(self._key("callbacks:claimed"), dict.fromkeys(ids, expiry), xx=True)

    def get(self, callback_id: str) -> CallbackRecord | None:
        text = cast(str | None, self.redis.get(self._key(f"callback:{callback_id}")))
        return None if text is None else CallbackRecord.from_json(text)

    def recent(self, limit: int) -> list[CallbackRecord]:
        ids = cast(list[str], self.redis.zrevrange(self._key("callbacks"), 0, limit - 1))
        texts = cast(list[str | None], self.redis.mget(
            [self._key(f"callback:{i}") for i in ids])) if ids else []
        return [CallbackRecord.from_json(t) for t in texts if t is not None]

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"


def callback_id(call_id: str) -> str:
    """The id of the call-back record of the call `call_id`: one per call."""
    return "cb-" + hashlib.sha256(call_id.encode()).hexdigest()[:12]


__all__ = ["NODE", "TRUNK", "CallbackRecord", "Callbacks", "callback_id"]
