"""Trunk state in a real Redis: overrides with expiry, audit, events, heartbeats."""

from __future__ import annotations

import time

import redis

from trunks.health import HealthSnapshot, Transition, TrunkState
from trunks.overrides import AuditAction, Override, OverrideAction
from trunks.store import TrunkStore


def test_override_replaces_and_is_audited(redis_client: redis.Redis) -> None:
    store = TrunkStore(redis_client)
    drain = Override("carrier-a", OverrideAction.DRAIN, "maintenance", "alice", time.time())
    assert store.set_override(drain) is None
    force = Override("carrier-a", OverrideAction.FORCE, "testing", "bob", time.time())
    assert store.set_override(force) == drain
    assert store.get_override("carrier-a") == force
    assert store.clear_override("carrier-a", "carol", "done") == force
    assert store.get_override("carrier-a") is None
    audit = store.audit_log(10)
    assert [(a.action, a.by) for a in audit] == [
        (AuditAction.RESTORE, "carol"), (AuditAction.FORCE, "bob"), (AuditAction.DRAIN, "alice")]
    assert audit[1].previous == "drain by alice: maintenance"
    assert audit[0].previous == "force by bob: testing"


def test_override_with_expiry_is_dropped_by_redis(redis_client: redis.Redis) -> None:
    store = TrunkStore(redis_client)
    now = time.time()
    store.set_override(Override("carrier-b", OverrideAction.DRAIN, "short", "alice", now,
                                expires_at=now + 1.0))
    assert store.overrides(["carrier-a", "carrier-b"])["carrier-b"].expires_at == now + 1.0
    assert 0 < redis_client.ttl("hotline:trunk:carrier-b:override") <= 2
    deadline = time.monotonic() + 5
    while store.get_override("carrier-b") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get_override("carrier-b") is None
    assert store.audit_log(10)[0].expires_at == now + 1.0


def test_health_events_and_heartbeat_round_trip(redis_client: redis.Redis) -> None:
    store = TrunkStore(redis_client, prefix="test")
    snap = HealthSnapshot("carrier-a", TrunkState.DOWN, 1000.5, 12.5, 11.0, 30.25,
                          "no response", 1001.0)
    store.save_health("node-1", snap)
    assert store.load_health("carrier-a", "node-1") == snap
    assert store.load_health("carrier-a", "node-2") is None
    store.add_transition("node-1", Transition("carrier-a", TrunkState.UP, TrunkState.SUSPECT,
                                              1000.0, "timeout"))
    [event] = store.transitions(5)
    assert (event.trunk, event.node, event.old, event.new) == (
        "carrier-a", "node-1", TrunkState.UP, TrunkState.SUSPECT)
    assert store.live_nodes() == []
    store.heartbeat("node-1", ttl_s=0.3)
    assert store.live_nodes() == ["node-1"]
    time.sleep(0.4)
    assert store.live_nodes() == []
    assert all(key.startswith("test:") for key in redis_client.keys("*"))
