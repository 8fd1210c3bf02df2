"""Two front doors (the shipped frontdoor.cfg on two addresses, one dispatcher list) and a
carrier that knows the hotline by both: killing one front door (SIGKILL) loses no new
call, since the carrier moves each call to the other. A call already up through the
killed one has its route set through it, so its later requests are lost (docs/cluster.md,
"Two front doors")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ivr.records import CallStore
from tests.cluster.cluster import HOLD_FLOW, Callers, Cluster, running_cluster
from tests.conftest import wait_for
from tests.peers import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def doors(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis,
          ) -> Iterator[Cluster]:
    """node-a and node-b behind front doors A (127.0.0.4) and B (127.0.0.6); the carrier
    sends each call to A, and to B when A does not answer it."""
    with running_cluster(tmp_path, redis_server.url, HOLD_FLOW,
                         ("127.0.0.4", "127.0.0.6")) as cluster:
        yield cluster


def test_a_killed_front_door_loses_no_new_call_but_the_byes_of_its_calls(
        doors: Cluster, tmp_path: Path, redis_client: redis.Redis) -> None:
    calls = CallStore(redis_client)
    door_a, door_b = doors.frontdoors
    up = Callers(doors.carrier, tmp_path / "up", rate=4, calls=4, bye_timeout_s=10)
    try:
        answered = [up.call_id(n) for n in range(1, 5)]
        wait_for(lambda: all((r := calls.get(c)) and r.answered_at for c in answered),
                 timeout=20, what="four calls up through front door A")
        assert len(door_a.nodes_used()) == 4 and door_b.nodes_used() == []
        door_a.kill()  # between two calls: none is being set up
        after = Callers(doors.carrier, tmp_path / "after", rate=2, calls=10)
        try:
            assert after.wait() == 0, f"a call was lost:\n{after.errors()[-3000:]}"
        finally:
            after.kill()
        assert after.counts()["SuccessfulCall"] == 10
        assert len(door_b.nodes_used()) == 10, "every call after the kill came through B"
        moved = re.findall(r"hotline sip:127\.0\.0\.4:\d+ failed for call-id (\S+): trying "
                           r"sip:127\.0\.0\.6", doors.carrier.log.read_text())
        assert sorted(moved) == sorted(after.call_id(n) for n in range(1, 11))
        assert up.wait() != 0  # the calls up through A never got the hotline's BYE
    finally:
        up.kill()
    assert up.counts() == {"OutgoingCall": 4, "SuccessfulCall": 0, "FailedCall": 4}
    byes = doors.carrier.log.read_text()
    for call in answered:  # (sipp's own BYE, when it gives up, comes from 127.0.0.1)
        assert not re.search(r"request BYE from 127\.0\.0\.[46]:", _lines(byes, call)), \
            "the hotline's BYE went to A, and no further"
        record = calls.get(call)
        assert record is not None and record.ended_at is not None
        assert record.end_reason == "hung up by hotline", "the node ended the call anyway"
    for n in range(1, 11):
        assert "request BYE from 127.0.0.6" in _lines(byes, after.call_id(n))
    assert all(calls.live(name) == {} for name in doors.nodes)


def _lines(log: str, call_id: str) -> str:
    """The log lines about `call_id`."""
    return "\n".join(line for line in log.splitlines() if call_id in line)
