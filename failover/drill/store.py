"""A drill's state in Redis: the cross-node lock, recorded overrides, requests,
progress events, cancel flags and reports (keys: see `failover.drill`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import redis

from failover.drill.report import DrillReport

logger = logging.getLogger(__name__)

EVENTS_TTL_S = 3600

BLOCK_S = 1.0
"""Longest single blocking read from Redis (well under a client's socket timeout)."""

# Compare-and-delete / compare-and-extend, so a drill never touches another's lock.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) " \
           "else return 0 end"
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"



class DrillStore:
    """The drill's keys in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "hotline") -> None:
        self.redis = client
        self.prefix = prefix

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:drill:{suffix}"

    def acquire(self, drill_id: str, ttl_s: float) -> bool:
        return bool(self.redis.set(self.key("lock"), drill_id, nx=True, px=int(ttl_s * 1000)))

    def extend(self, drill_id: str, ttl_s: float) -> bool:
        return bool(self.redis.eval(_EXTEND, 1, self.key("lock"), drill_id,
                                    int(ttl_s * 1000)))

    def release(self, drill_id: str) -> None:
        self.redis.eval(_RELEASE, 1, self.key("lock"), drill_id)

    def holder(self) -> str | None:
        return cast(str | None, self.redis.get(self.key("lock")))

    def claim_slot(self, slot: str, taker: str, keep_s: float) -> bool:
        """Take the schedule's time `slot` for one drill, for `keep_s`; False if a node
        already took it. `taker` says who did, for the others' log lines."""
        return bool(self.redis.set(self.key(f"slot:{slot}"), taker, nx=True,
                                   ex=max(1, int(keep_s))))

    def slot_taker(self, slot: str) -> str | None:
        return cast(str | None, self.redis.get(self.key(f"slot:{slot}")))

    def save_state(self, state: dict[str, Any]) -> None:
        self.redis.set(self.key("state"), json.dumps(state))

    def state(self) -> dict[str, Any] | None:
        text = cast(str | None, self.redis.get(self.key("state")))
        return None if text is None else cast(dict[str, Any], json.loads(text))

    def clear_state(self) -> None:
        self.redis.delete(self.key("state"))

    def save_report(self, report: DrillReport, keep: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.key(report.id), report.to_json())
        pipe.zadd(f"{self.prefix}:drills", {report.id: report.started_at})
        pipe.execute()
        old = cast(list[str], self.redis.zrange(f"{self.prefix}:drills", 0, -keep - 1))
        if old:
            self.redis.delete(*(self.key(i) for i in old))
            self.redis.zrem(f"{self.prefix}:drills", *old)

    def report(self, drill_id: str) -> DrillReport | None:
        text = cast(str | None, self.redis.get(self.key(drill_id)))
        return None if text is None else DrillReport.from_json(text)

    def reports(self, limit: int) -> list[DrillReport]:
        ids = cast(list[str], self.redis.zrevrange(f"{self.prefix}:drills", 0, limit - 1))
        texts = cast(list[str | None], self.redis.mget([self.key(i) for i in ids])) if ids else []
        return [DrillReport.from_json(t) for t in texts if t is not None]

    # Requests from the CLI and progress back to it.

    def request(self, drill_id: str, trunk: str | None, calls: int | None, by: str) -> None:
        self.redis.rpush(self.key("requests"), json.dumps(
            {"id": drill_id, "trunk": trunk, "calls": calls, "by": by}))

    def withdraw(self, drill_id: str) -> bool:
        """Take back a request no node has picked up; False if one already has."""
        for text in cast(list[str], self.redis.lrange(self.key("requests"), 0, -1)):
            if json.loads(text)["id"] == drill_id:
                return bool(self.redis.lrem(self.key("requests"), 1, text))
        return False

    def next_request(self, timeout_s: float) -> dict[str, Any] | None:
        item = cast(tuple[str, str] | None,
                    self.redis.blpop([self.key("requests")], timeout=min(timeout_s, BLOCK_S)))
        return None if item is None else cast(dict[str, Any], json.loads(item[1]))

    def event(self, drill_id: str, kind: str, **data: Any) -> None:
        key = self.key(f"{drill_id}:events")
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps({"kind": kind, "at": time.time(), **data}))
        pipe.expire(key, EVENTS_TTL_S)
        pipe.execute()

    def next_event(self, drill_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The drill's next event, or None if none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            # short waits: each must end well within the client's socket timeout
            item = cast(tuple[str, str] | None, self.redis.blpop(
                [self.key(f"{drill_id}:events")], timeout=min(left, BLOCK_S)))
            if item is not None:
                return cast(dict[str, Any], json.loads(item[1]))
        return None

    def cancel(self, drill_id: str) -> None:
        self.redis.set(self.key(f"{drill_id}:cancel"), "1", ex=EVENTS_TTL_S)

    def cancelled(self, drill_id: str) -> bool:
        return bool(self.redis.exists(self.key(f"{drill_id}:cancel")))


__all__ = ["DrillStore"]
