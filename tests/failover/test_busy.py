"""Who is busy across nodes: a lease per person in a real Redis, taken before ringing,
seen by the other nodes, lapsing with a dead node, and never holding a call up when
Redis hangs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from failover.busy import StaffLeases
from failover.router import Endpoint, Router
from tests.failover.test_router import StaticMonitor
from tests.peers import RedisServer
from trunks.health import TrunkState

PREFIX = "test"


def leases(client: redis.Redis, node: str, lease_s: float = 15.0) -> StaffLeases:
    return StaffLeases(client, PREFIX, node, lease_s=lease_s, renew_s=0.1)


def test_a_person_rung_on_one_node_is_busy_for_the_others(redis_client: redis.Redis) -> None:
    node_a, node_b = leases(redis_client, "node-a"), leases(redis_client, "node-b")
    assert node_a.take("bob")
    assert node_b.others(["bob", "carol"]) == {"bob"} and node_a.others(["bob"]) == set()
    assert not node_b.take("bob"), "taken by node-a"
    assert node_b.take("bob", take_over=True), "a call taken up from a dead node"
    assert node_a.others(["bob"]) == {"bob"}
    node_a.release("bob")  # node-a's call ends: node-b's lease stays
    assert node_a.others(["bob"]) == {"bob"}
    node_b.release("bob")
    assert node_a.take("bob")


def test_a_lease_lapses_with_its_node_and_lasts_while_renewed(
        redis_client: redis.Redis) -> None:
    dead, live = leases(redis_client, "node-a", 0.3), leases(redis_client, "node-b", 0.3)
    live.start()
    try:
        assert dead.take("bob") and live.take("carol")
        time.sleep(0.6)  # node-a renews nothing: it died
        other = leases(redis_client, "node-c")
        assert other.others(["bob", "carol"]) == {"carol"}, "renewed by node-b's thread"
        assert other.take("bob")
    finally:
        live.stop()


def test_routers_on_two_nodes_share_who_is_busy(redis_client: redis.Redis) -> None:
    def router(node: str) -> Router:
        return Router(StaticMonitor({"a": (TrunkState.UP, None)}), cast(dict[str, Endpoint], {}),
                      staff=leases(redis_client, node))

    node_a, node_b = router("node-a"), router("node-b")
    with node_a.busy("bob") as free:
        assert free
        assert node_b.available(["bob", "carol"]) == ["carol"]
        with node_b.busy("bob") as also:
            assert not also, "node-b lost the race for bob"
        assert node_b.available(["bob"]) == [], "node-b's failed take released nothing"
    assert node_b.available(["bob", "carol"]) == ["bob", "carol"]


@pytest.fixture
def hung_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A client of a Redis that is stopped (SIGSTOP): its port open, nothing answering.
    Like the server's fail-fast client: 0.5 s, no retries."""
    server = RedisServer(tmp_path / "hung")
    server.start()
    client = redis.Redis(unix_socket_path=str(server.socket), decode_responses=True,
                         socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    client.ping()
    server.pause()
    try:
        yield client
    finally:
        server.resume()
        client.close()
        server.stop()


def test_a_hung_redis_never_holds_a_forward_up(hung_redis: redis.Redis) -> None:
    staff = leases(hung_redis, "node-a")
    started = time.monotonic()
    assert staff.others(["bob"]) == set() and staff.take("bob")
    staff.release("bob")
    waited = time.monotonic() - started
    assert waited < 1.0, f"three bounded operations took {waited:.2f} s"


def test_after_a_failure_the_call_path_leaves_redis_alone_until_it_answers(
        hung_redis: redis.Redis) -> None:
    staff = leases(hung_redis, "node-a")
    assert staff.others(["bob"]) == set()  # waits the bound once
    started = time.monotonic()
    assert staff.take("bob") and staff.others(["carol"]) == set()
    assert time.monotonic() - started < 0.05, "the next calls do not wait"
