"""Node leases in a real Redis: claimed once per name, renewed, lapsing when a node
stops renewing, given up on a clean stop."""

from __future__ import annotations

import time

import pytest
import redis

from ivr.nodes import NodeInfo, NodeLease, NodeNameTaken, live_nodes, node_info
from tests.conftest import wait_for

PREFIX = "test"


def lease(client: redis.Redis, name: str, calls: int = 0) -> NodeLease:
    return NodeLease(client, PREFIX, NodeInfo(name, sip={"carrier-a": "127.0.0.1:5072"}),
                     live_calls=lambda: calls, lease_s=0.6, renew_s=0.2)


def test_a_node_is_listed_while_it_renews_and_gone_when_it_stops(
        redis_client: redis.Redis) -> None:
    node = lease(redis_client, "node-a", calls=3)
    node.claim()
    node.start()
    try:
        [info] = live_nodes(redis_client, PREFIX)
        assert info.name == "node-a" and info.sip == {"carrier-a": "127.0.0.1:5072"}
        assert info.live_calls == 3 and not info.draining
        time.sleep(1.0)  # longer than the lease: the renewals keep it
        assert node_info(redis_client, PREFIX, "node-a") is not None and node.held
    finally:
        node.stop()
    assert live_nodes(redis_client, PREFIX) == []


def test_a_second_process_may_not_take_a_live_nodes_name(redis_client: redis.Redis) -> None:
    first = lease(redis_client, "node-a")
    first.claim()
    first.start()
    try:
        with pytest.raises(NodeNameTaken, match="node name 'node-a' is held by another live"):
            lease(redis_client, "node-a").claim(sleep=lambda s: time.sleep(s))
    finally:
        first.stop()
    again = lease(redis_client, "node-a")
    again.claim()  # given up on stop: free at once
    again.stop()


def test_a_dead_nodes_lease_lapses_and_its_name_can_be_taken(
        redis_client: redis.Redis) -> None:
    dead = lease(redis_client, "node-a")
    dead.claim()  # claimed, never renewed: the process died
    waited: list[float] = []
    successor = lease(redis_client, "node-a")
    successor.claim(sleep=lambda s: (waited.append(s), time.sleep(s)))
    assert waited, "it waited for the dead node's lease to lapse"
    assert successor.held
    wait_for(lambda: live_nodes(redis_client, PREFIX) == [], timeout=3,
             what="the successor's unrenewed lease lapsing too")
