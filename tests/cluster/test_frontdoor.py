"""The shipped front door (config/kamailio/frontdoor.cfg) in front of two `hotline serve`
nodes: calls from the carrier spread over the nodes, a killed node's calls go to the
other, and strangers are answered by the front door, never reaching a node."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.cluster.cluster import Callers, Cluster
from tests.peers import sip_ping

pytestmark = pytest.mark.slow


def callers(cluster: Cluster, calls: int, workdir: Path, rate: float = 2.0) -> None:
    """`calls` sipp callers through the carrier, each answered and hung up by a node."""
    sipp = Callers(cluster.carrier, workdir, rate, calls)
    try:
        code = sipp.wait(90)
    finally:
        sipp.kill()
    if code != 0:
        pytest.fail(f"sipp callers failed ({code}):\n{sipp.errors()[-3000:]}")


def test_calls_spread_over_the_nodes_and_avoid_a_killed_one(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    callers(cluster, 4, tmp_path / "before")
    ports = {name: port for name, (_, port) in cluster.nodes.items()}
    used = cluster.frontdoor.nodes_used()
    assert sorted(used) == sorted(f"127.0.0.1:{p}" for p in ports.values() for _ in range(2))
    listed = cluster.live_nodes()
    assert sorted(listed) == ["node-a", "node-b"]
    assert listed["node-a"]["sip"] == {"carrier-a": f"127.0.0.1:{ports['node-a']}"}
    dead, _ = cluster.nodes["node-a"]
    dead.kill()
    callers(cluster, 6, tmp_path / "after", rate=4.0)  # every call answered: sipp checks
    node_a, node_b = (f"127.0.0.1:{ports[n]}" for n in ("node-a", "node-b"))
    after = cluster.frontdoor.nodes_used()[4:]
    moved = cluster.frontdoor.log.read_text().count(f"node sip:{node_a} failed")
    assert after.count(node_a) == moved, "a call sent to the dead node went to the other"
    log = cluster.frontdoor.log.read_text()
    noticed = log.index(f"node sip:{node_a} failed")
    later = re.findall(r"to node sip:(\S+)", log[noticed:])
    assert later and set(later) == {node_b}, "once a call failed on it, node-a got no more"


def test_strangers_get_403_from_the_front_door_and_floods_are_dropped(
        cluster: Cluster) -> None:
    assert sip_ping(cluster.frontdoor.port, cluster.frontdoor.host, status="403")
    answered = sum(sip_ping(cluster.frontdoor.port, cluster.frontdoor.host, timeout=0.05,
                            status="403") for _ in range(60))
    assert answered < 40, f"a flood of 60 requests got {answered} answers"
    log = "".join((p / "serve.log").read_text() for p in
                  [cluster.frontdoor.log.parent.parent / n for n in cluster.nodes])
    assert "Forbidden" not in log and "not a trunk address" not in log


def test_nodes_are_listed_and_a_name_is_taken_once(cluster: Cluster) -> None:
    assert sorted(cluster.live_nodes()) == ["node-a", "node-b"]
    second = cluster.hotline("serve", node="node-b")  # node-b's name, while node-b runs
    assert second.returncode == 1
    assert "node name 'node-b' is held by another live process" in second.stderr
    killed_at = time.monotonic()
    cluster.nodes["node-a"][0].kill()
    while "node-a" in cluster.live_nodes():
        assert time.monotonic() - killed_at < 15, "node-a's lease did not lapse"
        time.sleep(0.2)
    lapsed = time.monotonic() - killed_at
    assert lapsed < 10, f"node-a left the list {lapsed:.1f} s after SIGKILL"


def test_a_drained_node_stops_and_its_calls_go_to_the_other(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    done = cluster.hotline("nodes", "drain", "node-a", "--wait", "--by", "ops")
    assert done.returncode == 0, done.stderr
    assert "Node node-a has drained and stopped." in done.stdout
    process, _ = cluster.nodes["node-a"]
    assert process.process is not None and process.process.wait(10) == 0, "exited cleanly"
    assert sorted(cluster.live_nodes()) == ["node-b"]
    log = (cluster.workdir / "node-a" / "serve.log").read_text()
    assert "asked to drain (by ops" in log and "draining: 0 calls up" in log
    callers(cluster, 4, tmp_path / "after")  # all answered, by node-b
    missing = cluster.hotline("nodes", "drain", "node-a")
    assert missing.returncode == 1 and "no live node named 'node-a'" in missing.stderr
