"""Call records in Redis: one JSON document per call, indexed by start time and, while
the call is up, by the node that carries it; and each trunk's latest measured legs (the
keys are drawn in `ivr.records`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis
from redis.client import Pipeline

from ivr.records.model import CallRecord, measured_legs
from trunks.replicated import execute

RECORD_RETENTION_S = 90 * 86400
"""How long a call record is kept."""
QUALITY_KEPT = 100
"""Measured call legs kept per trunk in its quality list."""
DIALOG_KEPT_S = 86400
"""A bridged call's dialogs are kept while it is up; this long at most."""


class CallStore:
    """Call records in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "hotline",
                 clock: Callable[[], float] = time.time, replicas: int = 0,
                 replica_wait_ms: int = 100) -> None:
        """`replicas`: how many replicas must confirm a call's final record before it
        counts as saved (`trunks.replicated`); its live snapshots need none."""
        self.redis = client
        self.prefix = prefix
        self.clock = clock
        self.replicas, self.replica_wait_ms = replicas, replica_wait_ms

    def save(self, record: CallRecord) -> None:
        self.save_snapshot(dataclasses.asdict(record))

    def save_snapshot(self, data: Mapping[str, Any]) -> None:
        """Save a record as `dataclasses.asdict` gives it (with the writer's "dialog", kept
        under a key of its own while the call is up). A finished call's measured legs go
        into their trunks' quality lists in the same transaction (saving the same record
        again adds nothing: a leg is the same member)."""
        call_id = data["id"]
        dialog = data.get("dialog")
        up = data["ended_at"] is None

        def build(pipe: Pipeline) -> None:
            pipe.set(self._key(call_id),
                     json.dumps({k: v for k, v in data.items() if k != "dialog"}),
                     ex=RECORD_RETENTION_S)
            if (node := data.get("node")) is not None:
                if up and data.get("run") is not None:
                    pipe.hset(live_key(self.prefix, node), call_id, data["run"])
                else:
                    pipe.hdel(live_key(self.prefix, node), call_id)
            if up and dialog:
                pipe.set(self._dialog_key(call_id), json.dumps(dialog), ex=DIALOG_KEPT_S)
            else:
                pipe.delete(self._dialog_key(call_id))
            pipe.zadd(f"{self.prefix}:calls", {call_id: data["started_at"]})
            pipe.zremrangebyscore(f"{self.prefix}:calls", 0, self.clock() - RECORD_RETENTION_S)
            if not up:
                for trunk, leg in measured_legs(data):
                    key = self._quality_key(trunk)
                    pipe.zadd(key, {json.dumps(leg, sort_keys=True): data["ended_at"]})
                    pipe.zremrangebyrank(key, 0, -QUALITY_KEPT - 1)
                    pipe.expire(key, RECORD_RETENTION_S)

        execute(self.redis, build, 0 if up else self.replicas, self.replica_wait_ms)

    def dialog(self, call_id: str) -> dict[str, Any] | None:
        """The SIP dialogs of the call's legs while it is up and bridged, as its node
        last saved them (`SipChannel.dialog_state`), or None."""
        text = cast(str | None, self.redis.get(self._dialog_key(call_id)))
        return None if text is None else cast(dict[str, Any], json.loads(text))

    def live(self, node: str) -> dict[str, str]:
        """The calls whose records say they are up on `node`: call id -> the node's run
        that carries them."""
        return cast(dict[str, str], self.redis.hgetall(live_key(self.prefix, node)))

    def get(self, call_id: str) -> CallRecord | None:
        text = cast(str | None, self.redis.get(self._key(call_id)))
        return None if text is None else CallRecord.from_json(text)

    def recent(self, limit: int) -> list[CallRecord]:
        ids = cast(list[str], self.redis.zrevrange(f"{self.prefix}:calls", 0, limit - 1))
        return self._records(ids)

    def since(self, started_at: float) -> list[CallRecord]:
        """Every call started at or after `started_at`, newest first."""
        ids = cast(list[str], self.redis.zrevrangebyscore(f"{self.prefix}:calls", "+inf",
                                                          started_at))
        return self._records(ids)

    def trunk_legs(self, trunks: Sequence[str], limit: int) -> dict[str, list[dict[str, Any]]]:
        """The latest `limit` measured legs each of `trunks` carried, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        for trunk in trunks:
            pipe.zrevrange(self._quality_key(trunk), 0, limit - 1)
        found = cast(list[list[str]], pipe.execute())
        return {trunk: [json.loads(leg) for leg in legs]
                for trunk, legs in zip(trunks, found, strict=True)}

    def _records(self, ids: list[str]) -> list[CallRecord]:
        if not ids:
            return []
        texts = cast(list[str | None], self.redis.mget([self._key(i) for i in ids]))
        return [CallRecord.from_json(t) for t in texts if t is not None]

    def _key(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def _dialog_key(self, call_id: str) -> str:
        return f"{self.prefix}:dialog:{call_id}"

    def _quality_key(self, trunk: str) -> str:
        return f"{self.prefix}:quality:{trunk}"


def live_key(prefix: str, node: str) -> str:
    """The hash of the calls up on `node`, by their records."""
    return f"{prefix}:live:{node}"
