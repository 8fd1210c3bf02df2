"""Claims on forked calls (`ivr.calls.claims`): one node answers, Redis away or hung
means answering, and `ip` trunks answer whatever another node claimed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.calls.claims import CLAIM_S, AnswerClaims
from ivr.server import Server
from ivr.settings import load_settings
from tests.conftest import wait_for
from tests.peers import RedisServer, free_udp_port
from tests.sip_caller import sip_caller


def test_the_first_claim_wins_and_is_kept_for_the_invite_transaction(
        redis_client: redis.Redis) -> None:
    a, b = (AnswerClaims(redis_client, "hotline", node) for node in ("node-a", "node-b"))
    assert a.claim("call-1") is None, "node-a answers"
    assert b.claim("call-1") == "node-a", "node-b declines: node-a answers"
    assert a.claim("call-1") is None, "a claim of our own is ours to answer"
    assert b.claim("call-2") is None
    ttl_s = redis_client.pttl("hotline:answer:call-1") / 1000
    assert CLAIM_S - 1 < ttl_s <= CLAIM_S


def test_without_redis_a_node_answers(tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(unix_socket_path=str(tmp_path / "none.sock"),
                         retry=Retry(NoBackoff(), 0))  # as the server's fail-fast clients
    try:
        assert AnswerClaims(client, "hotline", "node-a").claim("call-1") is None
    finally:
        client.close()
    assert "answering without a claim, Redis unreachable" in caplog.text


def test_with_redis_hung_a_node_answers_after_the_bound(own_redis: RedisServer) -> None:
    client = redis.Redis(unix_socket_path=str(own_redis.socket), socket_timeout=2.0,
                         decode_responses=True)
    claims = AnswerClaims(client, "hotline", "node-a", wait_s=0.2)
    client.ping()
    own_redis.pause()
    try:
        started = time.monotonic()
        assert claims.claim("call-1") is None
        waited = time.monotonic() - started
    finally:
        own_redis.resume()
    try:  # the claim went on in the background, and holds once Redis is back
        wait_for(lambda: client.get("hotline:answer:call-1") == "node-a", what="the claim")
    finally:
        client.close()
    assert waited < 1.0, "not the client's 2 s socket timeout"


@pytest.fixture
def ip_node(tmp_path: Path, redis_server: RedisServer,
            redis_client: redis.Redis) -> Iterator[Server]:  # flushed before the server starts
    (tmp_path / "ivr.yaml").write_text(
        "start: bye\nvoice: {engine: espeak}\nnodes:\n  bye: {type: hangup, text: Hello.}\n")
    (tmp_path / "hotline.yaml").write_text(
        f"node: node-b\ndata_dir: {tmp_path / 'var'}\nredis: {{url: '{redis_server.url}'}}\n"
        f"trunks:\n  - {{name: carrier-a, mode: ip, proxy: '127.0.0.1:{free_udp_port()}', "
        f"listen: '127.0.0.1:{free_udp_port()}'}}\n")
    server = Server(load_settings(tmp_path / "hotline.yaml"))
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_an_ip_trunk_answers_a_call_another_node_claimed(
        ip_node: Server, redis_client: redis.Redis) -> None:
    """A front door retries a dead node's INVITE on another node with its Call-ID."""
    AnswerClaims(redis_client, "hotline", "node-a").claim("retried")
    with sip_caller(ip_node.endpoints["carrier-a"].address, "retried") as (caller, _):
        caller.call()
        caller.wait_request("BYE", 10)


def test_claims_log_nothing_when_redis_answers(redis_client: redis.Redis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ivr.calls.claims")
    AnswerClaims(redis_client, "hotline", "node-a").claim("call-1")
    assert caplog.text == ""
