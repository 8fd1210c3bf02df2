"""A hung or dead Redis while callers call a `Server` (on a Redis of the test's own): each
call is answered and its flow routes it within a bound, and every call's record lands
in Redis once when Redis is back, even across a stop and start of the server.

The flow forwards each call as far as the route plan (its one trunk's carrier is a
closed port, so the trunk is DOWN and nobody is rung) and then says goodbye, so a
call's prompt comes only after the routing decision, which reads the trunks' overrides
from Redis. Before that read and the drill's lock check had a bound, a hung Redis held
every caller in silence for the client's 2 s socket timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ivr.nodes import live_nodes
from ivr.records import SPOOL_PATH, CallRecord, CallStore, RecordSpool
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, wait_for
from tests.peers import RedisServer, free_udp_port
from tests.sip_caller import RtpCounter, sip_caller
from trunks.health import TrunkState

pytestmark = pytest.mark.slow

FLOW = """\
start: route
voice: {engine: espeak}
nodes:
  route: {type: forward, ring_s: 5, next: thanks, failure: thanks}
  thanks: {type: hangup, text: Thank you for calling.}
"""
ONCALL = """\
timezone: UTC
people:
  alice: {name: Alice, phone: "1001"}
rotation: {order: [alice], start: 2026-01-05, every_days: 7}
"""
BOUND_S = 1.0
"""Longest a caller may wait, for the answer or for the flow's first words after it:
well under the 2 s a Redis read waited for its socket timeout before."""
DRILL_CALLER = "hotline-drill"
SILENT = b"\xff\x7f"
"""PCMU's codes for a zero sample."""

StartHotline = Callable[[], Server]


@pytest.fixture
def start_hotline(tmp_path: Path, own_redis: RedisServer) -> Iterator[StartHotline]:
    """Start the hotline on `own_redis` (again, after a stop: same port, same data_dir),
    once its probes found the trunk DOWN; every server is stopped afterwards."""
    (tmp_path / "ivr.yaml").write_text(FLOW)
    (tmp_path / "oncall.yaml").write_text(ONCALL)
    probe = FAST_PROBES.model_dump()
    (tmp_path / "hotline.yaml").write_text(
        f"node: node-1\ndata_dir: {tmp_path / 'var'}\n"
        f'redis: {{url: "{own_redis.url}"}}\n'
        f'drill: {{number: "400", caller_id: {DRILL_CALLER}}}\ntrunks:\n'
        f'  - {{name: carrier-a, mode: ip, proxy: "127.0.0.1:{free_udp_port()}", '
        f'listen: "127.0.0.1:{free_udp_port()}", probe: {probe}}}\n')
    servers: list[Server] = []

    def start() -> Server:
        servers.append(Server(load_settings(tmp_path / "hotline.yaml")))
        servers[-1].start()
        monitor = servers[-1].monitor
        assert monitor is not None
        wait_for(lambda: monitor.snapshots()["carrier-a"].state is TrunkState.DOWN,
                 what="the trunk DOWN")
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def call(server: Server, call_id: str, caller: str = "caller") -> tuple[float, float]:
    """One call, ended by the flow after its goodbye: seconds from the INVITE to the
    200 OK, and from the 200 OK to the first sound of the goodbye."""
    with sip_caller(server.endpoints["carrier-a"].address, call_id, caller=caller) as (
            sip, rtp):
        invited = time.monotonic()
        sip.call()
        answered = time.monotonic()
        sip.wait_request("BYE", 15)
        heard = first_sound(rtp)
    return answered - invited, heard - answered


def first_sound(rtp: RtpCounter) -> float:
    """When the first packet that is not silence arrived (monotonic)."""
    return next(at for at, data, _ in list(rtp.arrivals) if data[12:].strip(SILENT))


def final_records(client: redis.Redis, ids: list[str]) -> list[CallRecord]:
    """The calls' records, once every one is in Redis with its end."""
    store = CallStore(client)
    wait_for(lambda: all((r := store.get(i)) is not None and r.ended_at is not None
                         for i in ids), timeout=15, what=f"the final records of {ids}")
    return [r for i in ids if (r := store.get(i)) is not None]


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(server.socket), decode_responses=True,
                       socket_timeout=2.0)


def test_with_redis_hung_calls_are_answered_and_routed_at_once(
        start_hotline: StartHotline, own_redis: RedisServer) -> None:
    server = start_hotline()
    own_redis.pause()
    try:
        waits = [call(server, f"hung-{n}") for n in range(3)]
    finally:
        own_redis.resume()
    assert max(setup for setup, _ in waits) < BOUND_S, waits
    assert max(words for _, words in waits) < BOUND_S, waits
    client = client_of(own_redis)
    try:
        for record in final_records(client, [f"hung-{n}" for n in range(3)]):
            assert (record.path, record.outcome) == (["route", "thanks"], "completed")
            assert record.routing["carrier-a"].startswith("DOWN since")
    finally:
        client.close()


def test_with_redis_hung_a_call_from_the_drills_caller_id_runs_the_flow_at_once(
        start_hotline: StartHotline, own_redis: RedisServer) -> None:
    server = start_hotline()
    own_redis.pause()
    try:
        setup, words = call(server, "drill-like", caller=DRILL_CALLER)
    finally:
        own_redis.resume()
    assert setup < BOUND_S and words < BOUND_S, (setup, words)
    client = client_of(own_redis)
    try:
        (record,) = final_records(client, ["drill-like"])
        assert record.caller == DRILL_CALLER and record.path == ["route", "thanks"], \
            "no drill runs: the flow, not the responder"
    finally:
        client.close()


def test_records_made_while_redis_is_hung_or_killed_land_once_across_a_restart(
        start_hotline: StartHotline, own_redis: RedisServer, tmp_path: Path) -> None:
    server = start_hotline()
    call(server, "up-0")
    own_redis.pause()
    call(server, "hung-0")
    call(server, "hung-1")
    own_redis.kill()
    call(server, "dead-0")
    call(server, "dead-1")
    server.stop()  # Redis still away: what it did not take is in the spool
    spool = RecordSpool(tmp_path / "var" / SPOOL_PATH)
    assert spool.pending()
    spooled = [json.loads(line)["id"] for line in spool.path.read_text().splitlines()]
    assert {"hung-0", "hung-1", "dead-0", "dead-1"} <= set(spooled)

    own_redis.start()
    start_hotline()  # reads the spool left behind, and replays it
    ids = ["up-0", "hung-0", "hung-1", "dead-0", "dead-1"]
    client = client_of(own_redis)
    try:
        for record in final_records(client, ids):
            assert (record.path, record.outcome) == (["route", "thanks"], "completed")
        wait_for(lambda: not spool.pending(), what="the spool replayed and removed")
        assert sorted(client.zrange("hotline:calls", 0, -1)) == sorted(ids)
        assert sorted(client.scan_iter("hotline:call:*")) == sorted(
            f"hotline:call:{i}" for i in ids), "each record once"
    finally:
        client.close()


def test_a_node_starts_and_takes_calls_while_redis_is_down(
        start_hotline: StartHotline, own_redis: RedisServer) -> None:
    """Degraded, not dead: menus, routing by what it knows, records spooled; once Redis is
    back the node claims its lease and its records land."""
    own_redis.kill()
    server = start_hotline()
    setup, words = call(server, "down-0")
    assert setup < BOUND_S and words < BOUND_S, (setup, words)
    own_redis.start()
    client = client_of(own_redis)
    try:
        (record,) = final_records(client, ["down-0"])
        assert (record.path, record.outcome) == (["route", "thanks"], "completed")
        assert record.node == "node-1"
        wait_for(lambda: [n.name for n in live_nodes(client, "hotline")] == ["node-1"],
                 what="the node's lease claimed once Redis is back")
    finally:
        client.close()
