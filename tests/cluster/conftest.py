"""Fixtures of the cluster tests (tests/cluster/cluster.py). A test module gives the
nodes its own call flow by overriding the `flow` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster.cluster import FLOW, Cluster, running_cluster
from tests.peers import RedisServer


@pytest.fixture
def flow() -> str:
    """The nodes' ivr.yaml."""
    return FLOW


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis,
            flow: str) -> Iterator[Cluster]:
    """node-a and node-b behind one front door, fed by one carrier."""
    with running_cluster(tmp_path, redis_server.url, flow) as found:
        yield found
