"""Trunk state in Redis: health per node, transition events, overrides and their audit.

Keys (``{p}`` is the prefix, ``hotline`` by default):

    {p}:node:{node}                  string, expires: the node's monitor is alive
    {p}:trunk:{trunk}:health:{node}  hash: the latest HealthSnapshot seen by that node
    {p}:trunk:{trunk}:override       hash: the trunk's Override; Redis expires it
    {p}:trunks:events                stream: state transitions
    {p}:trunks:audit                 stream: operator actions

Redis errors propagate as ``redis.RedisError``; callers decide whether to retry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis

from trunks.health import HealthSnapshot, Transition, TrunkState
from trunks.overrides import AuditAction, AuditEntry, Override, OverrideAction

STREAM_MAXLEN = 100_000
"""Approximate number of entries kept in each stream."""


@dataclass(frozen=True)
class TransitionEvent:
    trunk: str
    node: str
    old: TrunkState
    new: TrunkState
    at: float
    reason: str


class TrunkStore:
    """Reads and writes trunk state in one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str = "hotline",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.prefix = prefix
        self.clock = clock

    # Health, written by the monitor of each node.

    def save_health(self, node: str, snapshot: HealthSnapshot) -> None:
        key = self._health_key(snapshot.trunk, node)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=_encode(asdict(snapshot)))
        pipe.execute()

    def load_health(self, trunk: str, node: str) -> HealthSnapshot | None:
        fields = self._hash(self._health_key(trunk, node))
        if not fields:
            return None

        def number(name: str) -> float | None:
            return float(fields[name]) if name in fields else None

        return HealthSnapshot(trunk, TrunkState(fields["state"]), float(fields["since"]),
                              number("rtt_last_ms"), number("rtt_smoothed_ms"),
                              number("rtt_p95_ms"), fields.get("last_error"),
                              number("last_probe"), number("recovered_at"))

    def add_transition(self, node: str, transition: Transition) -> None:
        self.redis.xadd(self._key("trunks:events"), _encode({
            "trunk": transition.trunk, "node": node, "old": transition.old.value,
            "new": transition.new.value, "at": transition.at, "reason": transition.reason}),
            maxlen=STREAM_MAXLEN, approximate=True)

    def transitions(self, limit: int) -> list[TransitionEvent]:
        return [TransitionEvent(f["trunk"], f["node"], TrunkState(f["old"]),
                                TrunkState(f["new"]), float(f["at"]), f["reason"])
                for f in self._stream("trunks:events", limit)]

    def heartbeat(self, node: str, ttl_s: float) -> None:
        self.redis.set(self._key(f"node:{node}"), str(self.clock()), px=int(ttl_s * 1000))

    def live_nodes(self) -> list[str]:
        """Nodes whose monitor has sent a heartbeat that has not expired."""
        start = len(self._key("node:"))
        return sorted(key[start:] for key in self.redis.scan_iter(self._key("node:*")))

    # Overrides, written by operators through the CLI or HTTP API.

    def set_override(self, override: Override) -> Override | None:
        """Store `override` (replacing any other on that trunk) and audit it."""
        key = self._override_key(override.trunk)
        previous = self.get_override(override.trunk)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=_encode(asdict(override)))
        if override.expires_at is not None:  # relative: Redis's clock may differ from ours
            pipe.pexpire(key, max(1, math.ceil((override.expires_at - self.clock()) * 1000)))
        self._audit(pipe, AuditEntry(override.trunk, AuditAction(override.action.value),
                                     override.reason, override.by, override.at,
                                     override.expires_at, _describe(previous)))
        pipe.execute()
        return previous

    def clear_override(self, trunk: str, by: str, reason: str) -> Override | None:
        """Remove the trunk's override, audit that, and return what was removed."""
        previous = self.get_override(trunk)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._override_key(trunk))
        self._audit(pipe, AuditEntry(trunk, AuditAction.RESTORE, reason, by, self.clock(),
                                     None, _describe(previous)))
        pipe.execute()
        return previous

    def get_override(self, trunk: str) -> Override | None:
        fields = self._hash(self._override_key(trunk))
        return Override.from_fields(fields) if fields else None

    def overrides(self, trunks: Iterable[str]) -> dict[str, Override]:
        found = {name: self.get_override(name) for name in trunks}
        return {name: ov for name, ov in found.items() if ov is not None}

    def audit_log(self, limit: int) -> list[AuditEntry]:
        return [AuditEntry(f["trunk"], AuditAction(f["action"]), f["reason"], f["by"],
                           float(f["at"]), float(f["expires_at"]) if "expires_at" in f else None,
                           f.get("previous")) for f in self._stream("trunks:audit", limit)]

    def _audit(self, pipe: redis.client.Pipeline, entry: AuditEntry) -> None:
        pipe.xadd(self._key("trunks:audit"), _encode(asdict(entry)), maxlen=STREAM_MAXLEN,
                  approximate=True)

    # The client decodes replies to str; redis-py's types cannot say so.
    def _hash(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(key))

    def _stream(self, suffix: str, limit: int) -> list[dict[str, str]]:
        rows = cast(list[tuple[str, dict[str, str]]],
                    self.redis.xrevrange(self._key(suffix), count=limit))
        return [fields for _, fields in rows]

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def _health_key(self, trunk: str, node: str) -> str:
        return self._key(f"trunk:{trunk}:health:{node}")

    def _override_key(self, trunk: str) -> str:
        return self._key(f"trunk:{trunk}:override")


def _encode(values: Mapping[str, Any]) -> Any:
    """Redis fields for a record: enums by value, numbers as text, None left out."""
    return {k: getattr(v, "value", v) if isinstance(v, str) else str(v)
            for k, v in values.items() if v is not None}


def _describe(override: Override | None) -> str | None:
    if override is None:
        return None
    return f"{override.action.value} by {override.by}: {override.reason}"


__all__ = ["OverrideAction", "TransitionEvent", "TrunkStore"]
