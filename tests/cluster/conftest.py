"""Fixtures of the cluster tests (tests/cluster/cluster.py). A test module gives the
nodes its own call flow by overriding the `flow` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.cluster import FLOW, Cluster, node
from tests.peers import Carrier, FrontDoor, RedisServer, free_udp_port


@pytest.fixture
def flow() -> str:
    """The nodes' ivr.yaml."""
    return FLOW


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis,
            flow: str) -> Iterator[Cluster]:
    """node-a and node-b behind one front door, fed by one carrier."""
    frontdoor_port = free_udp_port()
    carrier = Carrier(tmp_path / "carrier", host="127.0.0.3",
                      hotline=("127.0.0.4", frontdoor_port))
    listens = {"node-a": free_udp_port(), "node-b": free_udp_port()}
    frontdoor = FrontDoor(tmp_path / "frontdoor", [f"127.0.0.1:{p}" for p in listens.values()],
                          [carrier.address], port=frontdoor_port)
    nodes = {name: (node(tmp_path, name, redis_server.url, carrier.address, [frontdoor.host],
                         port, flow), port) for name, port in listens.items()}
    try:
        carrier.start()
        frontdoor.start()
        for process, _ in nodes.values():
            process.start()
        found = Cluster(carrier, [frontdoor], nodes, tmp_path)
        found.wait_serving(*nodes)
        yield found
    finally:
        for process, _ in nodes.values():
            process.stop()
        frontdoor.stop()
        carrier.stop()
