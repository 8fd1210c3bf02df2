"""Draining a node: no new calls, the calls up go on to their end, then the node is idle."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ivr.clock import fixed
from ivr.nodes import node_info
from ivr.server import Server
from ivr.settings import load_settings
from tests.peers import RedisServer, free_udp_port
from tests.sip_caller import sip_caller

pytestmark = pytest.mark.slow
NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
"""A Monday noon: the flow does not depend on it, but no test reads the wall clock."""
FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu: {type: menu, text: Press one., options: {"1": bye}, timeout_s: 20, retries: 1,
         failure: bye}
  bye: {type: hangup}
"""


@pytest.fixture
def server(tmp_path: Path, redis_server: RedisServer,
           redis_client: redis.Redis) -> Iterator[Server]:  # flushed before the server starts
    (tmp_path / "ivr.yaml").write_text(FLOW)
    # calls come from 127.0.0.1, the trunk's proxy address (a closed port: no probes answer)
    (tmp_path / "hotline.yaml").write_text(
        f"node: node-d\ndata_dir: {tmp_path / 'var'}\nredis: {{url: '{redis_server.url}'}}\n"
        f"trunks:\n  - {{name: carrier-a, mode: ip, proxy: '127.0.0.1:{free_udp_port()}', "
        f"listen: '127.0.0.1:{free_udp_port()}'}}\n")
    hotline = Server(load_settings(tmp_path / "hotline.yaml"), now=fixed(NOW))
    hotline.start()
    yield hotline
    hotline.stop()


def test_a_call_up_when_draining_starts_goes_on_to_its_end(server: Server,
                                                           redis_client: redis.Redis) -> None:
    endpoint = server.endpoints["carrier-a"]
    with sip_caller(endpoint.address, "up-while-draining") as (caller, _):
        caller.call()
        assert server.live_calls() == 1
        server.drain()
        info = node_info(redis_client, server.settings.redis.prefix, "node-d")
        assert info is not None and info.draining and info.live_calls == 1
        with sip_caller(endpoint.address, "too-late") as (late, _):
            late.request("INVITE", body=late.sdp())
            assert late.final("INVITE").status_code == 503
            late.ack()
        assert not server.wait_drained(0.5), "the call is still up"
        assert caller.hang_up().status_code == 200
    assert server.wait_drained(5)
