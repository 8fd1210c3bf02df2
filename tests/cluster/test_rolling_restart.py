"""A rolling restart of two nodes under load drops no call: sipp callers reach the nodes
through the carrier and the front door at CALL_RATE calls a second, each call held for
about four seconds by the flow (a prompt, then goodbye and the hotline hangs up), while
node-a and then node-b are drained (`hotline nodes drain NAME --wait`), started again and
waited for until `hotline nodes status` lists them and the front door has them back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from ivr.records import CallStore
from tests.cluster.cluster import HOLD_FLOW, Callers, Cluster
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CALL_RATE = 3.0
"""New calls a second, through the whole restart."""


@pytest.fixture
def flow() -> str:
    return HOLD_FLOW


def restart(cluster: Cluster, name: str) -> None:
    """Drain node `name`, start it again, and wait until it is listed and the front door
    has it back in its rotation (one probe, at most 2 s, after it serves): a node drained
    before that leaves the front door with no node, and the calls of that moment get
    503 (the docs' rolling restart says so)."""
    other = "node-b" if name == "node-a" else "node-a"
    ups = cluster.rotation_changes(name, "up")
    done = cluster.hotline("nodes", "drain", name, "--wait", "--by", "ops", node=other)
    assert done.returncode == 0, done.stderr
    assert f"Node {name} has drained and stopped." in done.stdout
    process, _ = cluster.nodes[name]
    assert process.process is not None and process.process.wait(10) == 0, "exited cleanly"
    assert "asked to drain (by ops" in cluster.log(name)
    process.start()
    cluster.wait_serving(name)
    wait_for(lambda: name in cluster.live_nodes(), timeout=20, what=f"{name} listed")
    wait_for(lambda: cluster.rotation_changes(name, "up") > ups, timeout=10,
             what=f"{name} back in the front door's rotation")


def test_a_rolling_restart_under_load_drops_no_call(cluster: Cluster, tmp_path: Path,
                                                    redis_client: redis.Redis) -> None:
    calls = CallStore(redis_client)
    started = time.time()
    load = Callers(cluster.carrier, tmp_path / "callers", CALL_RATE)
    try:
        wait_for(lambda: len(calls.since(started)) >= 6, timeout=20, what="calls under way")
        for name in ("node-a", "node-b"):
            restart(cluster, name)
        time.sleep(3)  # calls on both restarted nodes
        load.stop()
        assert load.wait() == 0, f"sipp callers failed:\n{load.errors()[-3000:]}"
        stats = load.counts()
    finally:
        load.kill()
    assert stats["FailedCall"] == 0 and stats["SuccessfulCall"] == stats["OutgoingCall"]
    records = calls.since(started)
    assert len(records) == stats["OutgoingCall"], "a record for every call"
    cut = [(r.id, r.node, r.end_reason) for r in records
           if r.ended_at is None or r.end_reason != "hung up by hotline"]
    assert cut == [], "every call ran its flow to the end and was hung up by the hotline"
    assert all(r.path == ["hold", "bye"] for r in records)
    assert all(calls.live(name) == {} for name in cluster.nodes)
    runs = {(r.node, r.run) for r in records}
    assert sorted(node for node, _ in runs) == ["node-a", "node-a", "node-b", "node-b"], \
        "each node took calls before and after its restart"
    held = sorted(r.ended_at - r.answered_at for r in records if r.ended_at and r.answered_at)
    print(f"rolling restart: {stats['OutgoingCall']} calls placed, "
          f"{stats['SuccessfulCall']} completed, each held {held[0]:.1f}-{held[-1]:.1f} s, "
          f"{time.time() - started:.0f} s in all")
