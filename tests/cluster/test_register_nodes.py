"""Two nodes registered under one AOR with a forking registrar (carrier.cfg's REGISTRAR):
each node registers its own Contact, and a caller's INVITE to the AOR reaches both at
once (parallel forking). The caller must be answered once.

Topology: a scripted caller (`ForkedCaller`) -> the carrier (Kamailio: registrar with
digest auth, forking proxy) -> node-a and node-b (`Server`s in this process, each its
own data_dir) -> one redis-server.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import yaml

from ivr.records import CallStore
from ivr.records.store import live_key
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import FAST_PROBES, wait_for
from tests.peers import Carrier, GroupProcess, RedisServer, free_udp_port
from tests.sip_caller import ForkedCaller, RtpCounter, registrar_bindings
from trunks.voip.registration import RegistrationState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

USER, PASSWORD = "hotline", "s3cret"
TRUNK = "carrier-r"
PREFIX = "hotline"
FLOW = """\
start: menu
voice: {engine: espeak}
nodes:
  menu: {type: menu, text: Press 1 to finish., options: {"1": bye}, timeout_s: 30, retries: 1,
         failure: bye}
  bye: {type: hangup, text: Goodbye.}
"""
WINDOW_S = 1.5
"""How long the caller waits after the first final response for more (a second 200)."""


class Nodes:
    """Hotline nodes, each registering the one register trunk: `Server`s in this process
    (`start`), or `hotline serve` processes (`spawn`)."""

    def __init__(self, tmp_path: Path, redis_url: str, carrier: Carrier) -> None:
        self.tmp_path, self.redis_url, self.carrier = tmp_path, redis_url, carrier
        self.servers: dict[str, Server] = {}
        self.processes: dict[str, GroupProcess] = {}
        self.listen: dict[str, int] = {}

    def start(self, name: str, **trunk: object) -> Server:
        server = self.servers[name] = Server(load_settings(self._config(name, trunk)))
        server.start()
        return server

    def spawn(self, name: str, **trunk: object) -> GroupProcess:
        config = self._config(name, trunk)
        process = self.processes[name] = GroupProcess(
            [sys.executable, "-m", "ivr", "serve", "--config", str(config)],
            config.parent / "serve.log")
        process.start()
        return process

    def contact(self, name: str) -> str:
        """The host:port node `name` registers."""
        return f"127.0.0.1:{self.listen[name]}"

    def named(self, contact: str) -> str:
        return next(name for name in self.listen if self.contact(name) == contact)

    def registered(self) -> list[str]:
        """The nodes whose contact the registrar holds now."""
        host, port = self.carrier.address.split(":")
        bound = registrar_bindings((host, int(port)), USER, PASSWORD)
        return sorted(self.named(uri.split("@", 1)[1].split(";")[0]) for uri in bound)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        for process in self.processes.values():
            process.kill()

    def _config(self, name: str, trunk: dict[str, object]) -> Path:
        work = self.tmp_path / name
        work.mkdir()
        self.listen[name] = free_udp_port()
        (work / "ivr.yaml").write_text(FLOW)
        (work / "hotline.yaml").write_text(yaml.safe_dump({
            "node": name, "data_dir": str(work / "var"), "redis": {"url": self.redis_url},
            "trunks": [{"name": TRUNK, "mode": "register", "proxy": self.carrier.address,
                        "username": USER, "password": PASSWORD,
                        "listen": f"127.0.0.1:{self.listen[name]}",
                        "probe": FAST_PROBES.model_dump(), **trunk}]}))
        return work / "hotline.yaml"


@pytest.fixture
def carrier(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Carrier]:
    carrier = Carrier(tmp_path / "carrier", registrar=USER, auth_password=PASSWORD,
                      min_expires=1)
    carrier.start()
    yield carrier
    carrier.stop()


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer, carrier: Carrier) -> Iterator[Nodes]:
    nodes = Nodes(tmp_path, redis_server.url, carrier)
    yield nodes
    nodes.stop()


@contextmanager
def calling(carrier: Carrier, call_id: str) -> Iterator[ForkedCaller]:
    """A caller dialling the AOR through the carrier; its dialogs are hung up after."""
    host, port = carrier.address.split(":")
    rtp = RtpCounter()
    caller = ForkedCaller((host, int(port)), rtp.port, call_id, f"sip:{USER}@{carrier.address}")
    try:
        yield caller
        assert caller.hang_up_all() == [200] * len(caller.dialogs)
    finally:
        caller.close()
        rtp.close()


def answered_by(nodes: Nodes, caller: ForkedCaller) -> list[str]:
    """The nodes whose 200 reached the caller, in order."""
    contacts = [ok.value("Contact") or "" for ok in caller.dialogs.values()]
    return [nodes.named(c.split("@", 1)[1].split(">")[0]) for c in contacts]


def registered_both(nodes: Nodes, timeout: float = 10.0) -> None:
    wait_for(lambda: nodes.registered() == ["node-a", "node-b"], timeout,
             what="both nodes registered")


def test_a_forked_call_is_answered_by_one_node(nodes: Nodes, carrier: Carrier,
                                               redis_client: redis.Redis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivr.calls.handler")
    nodes.start("node-a")
    nodes.start("node-b")
    registered_both(nodes)
    with calling(carrier, "forked-1") as caller:
        caller.invite()
        finals = caller.answers(WINDOW_S)
        assert sorted(carrier.branches("forked-1")) == sorted(
            nodes.contact(n) for n in ("node-a", "node-b")), "forked to both contacts"
        answered = answered_by(nodes, caller)
        live = {n: redis_client.hkeys(live_key(PREFIX, n)) for n in ("node-a", "node-b")}
        assert len(answered) == 1, f"the caller was answered by {answered}; records: {live}"
        assert [f.status_code for f in finals] == [200], "the loser's answer is absorbed"
        winner = answered[0]
        loser = "node-b" if winner == "node-a" else "node-a"
        assert (nodes.servers[winner].live_calls(), nodes.servers[loser].live_calls()) == (1, 0)
        assert redis_client.hkeys(live_key(PREFIX, winner)) == ["forked-1"]
        assert redis_client.hkeys(live_key(PREFIX, loser)) == [], "no record of the loser's"
        assert redis_client.get(f"{PREFIX}:answer:forked-1") == winner
        assert f"answered by node {winner}; declined here 480" in caplog.text
    record = CallStore(redis_client).get("forked-1")
    assert record is not None and record.node == winner and record.answered_at is not None


def test_a_drained_node_unregisters_and_the_next_call_reaches_only_the_other(
        nodes: Nodes, carrier: Carrier) -> None:
    node_a = nodes.start("node-a")
    nodes.start("node-b")
    registered_both(nodes)
    registration = node_a.endpoints[TRUNK].registration
    assert registration is not None
    node_a.drain()
    wait_for(lambda: registration.state is RegistrationState.UNREGISTERED, timeout=5,
             what="node-a's un-REGISTER taken")
    assert nodes.registered() == ["node-b"]
    with calling(carrier, "after-drain") as caller:
        caller.invite()
        assert [f.status_code for f in caller.answers(WINDOW_S)] == [200]
        assert carrier.branches("after-drain") == [nodes.contact("node-b")]
        assert answered_by(nodes, caller) == ["node-b"]


EXPIRES_S = 3
"""A registration lifetime short enough to watch a dead node's binding expire."""
SETUP_BOUND_S = 1.0
"""Longest a call may take to be answered while a dead node's contact is still
registered: the live node's branch answers; the dead one's is left to time out."""


def test_a_killed_nodes_contact_gets_branches_only_until_it_expires(
        nodes: Nodes, carrier: Carrier) -> None:
    nodes.start("node-a", register_expires_s=EXPIRES_S)
    node_b = nodes.spawn("node-b", register_expires_s=EXPIRES_S)
    registered_both(nodes, timeout=60)
    node_b.kill()  # SIGKILL: no un-REGISTER
    killed_at = time.monotonic()
    assert nodes.registered() == ["node-a", "node-b"], "node-b's binding is still there"
    with calling(carrier, "dead-contact") as caller:
        invited = caller.invite()
        finals = caller.answers(WINDOW_S)
        assert caller.answered_at is not None
        setup_s = caller.answered_at - invited
        assert sorted(carrier.branches("dead-contact")) == sorted(
            nodes.contact(n) for n in ("node-a", "node-b")), "forked to the dead contact too"
        assert [f.status_code for f in finals] == [200]
        assert answered_by(nodes, caller) == ["node-a"]
    assert setup_s < SETUP_BOUND_S, f"answered {setup_s:.3f} s after the INVITE"
    wait_for(lambda: nodes.registered() == ["node-a"], timeout=EXPIRES_S + 2,
             what="node-b's binding expired")
    expired_s = time.monotonic() - killed_at
    assert expired_s <= EXPIRES_S + 1, f"gone {expired_s:.1f} s after the kill"
    with calling(carrier, "after-expiry") as caller:
        caller.invite()
        assert [f.status_code for f in caller.answers(WINDOW_S)] == [200]
        assert carrier.branches("after-expiry") == [nodes.contact("node-a")]
