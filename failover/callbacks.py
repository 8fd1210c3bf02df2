"""Callers cut off by a trunk failure: their call-back records, and whether to call back.

When a call ends without a goodbye (its audio stopped, or our answer was never
acknowledged), the call layer hands `Callbacks.cut_off` what it knows: the number,
the trunk and its health, where in the flow the caller was. The server calls back only
when all of these hold, since a caller ID can be forged and a call-back costs money:

- call-backs are enabled;
- the call's trunk was failing (SUSPECT, DOWN or RECOVERING) when the call ended: a
  cut-off on a healthy trunk is the caller's own line, or someone provoking one;
- the number is digits and matches `callback.numbers`;
- it was not called back within `per_number_s`, and fewer than `per_hour` call-backs
  were placed in the last hour (both counted in Redis, across nodes).

Otherwise, or when the call-back fails, staff get a ticket to call the caller. Nothing
is dropped silently: the record says which, and why.

Keys (``{p}`` is the prefix):

    {p}:callback:{id}          string, JSON CallbackRecord; expires after RETENTION_S
    {p}:callbacks:due          sorted set of ids waiting, by due time
    {p}:callbacks              sorted set of every id, by cut-off time
    {p}:callback:number:{n}    string: number n had a call-back; expires per_number_s
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from failover.config import CallbackSettings

RETENTION_S = 30 * 86400
FAILING_STATES = frozenset({"suspect", "down", "recovering"})
"""Trunk states (at the end of a cut-off call) that make it a trunk failure."""
DIGITS = re.compile(r"\+?[0-9]+")


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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CallbackRecord:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


class Callbacks:
    """Decides and keeps call-backs; thread-safe (Redis does the claiming)."""

    def __init__(self, client: redis.Redis, settings: CallbackSettings, prefix: str = "hotline",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.settings = settings
        self.prefix = prefix
        self.clock = clock
        self._numbers = re.compile(settings.numbers)

    def cut_off(self, record: CallbackRecord) -> CallbackRecord:
        """Keep `record` as a call-back due later, or mark it for a ticket (status
        "ticket", with `why`); returns it as saved."""
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
        if record.trunk_state not in FAILING_STATES:
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
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(f"callback:{record.id}"), record.to_json(), ex=RETENTION_S)
        pipe.zadd(self._key("callbacks"), {record.id: record.cut_at})
        if record.status == "pending" and record.due_at is not None:
            pipe.zadd(self._key("callbacks:due"), {record.id: record.due_at})
        pipe.zremrangebyscore(self._key("callbacks"), 0, self.clock() - RETENTION_S)
        pipe.execute()

    def claim_due(self, limit: int = 10) -> list[CallbackRecord]:
        """Call-backs due now that this node takes (each to one node at most)."""
        ids = cast(list[str], self.redis.zrangebyscore(self._key("callbacks:due"), 0,
                                                        self.clock(), start=0, num=limit))
        claimed = []
        for callback_id in ids:
            if self.redis.zrem(self._key("callbacks:due"), callback_id):
                record = self.get(callback_id)
                if record is not None:
                    claimed.append(record)
        return claimed

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


__all__ = ["CallbackRecord", "Callbacks"]
