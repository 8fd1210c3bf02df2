"""Taking over a dead node's calls, in a real Redis: the calls a node left up are closed
once across the cluster, its callers handed on once, and nothing is taken from a node
that still answers or from this node's own live run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from ivr import metrics
from ivr.calls.takeover import CALLER_GONE, NODE_FAILURE, Takeover, node_answers
from ivr.nodes import NodeInfo, NodeLease
from ivr.records import CallRecord, CallStore, RecordSpool, RecordWriter, live_key
from tests.conftest import wait_for
from tests.peers import Carrier, free_udp_port

PREFIX = "test"


class Node:
    """A node as the others see it: its lease (claimed, renewed only when asked) and its
    record writer."""

    def __init__(self, client: redis.Redis, name: str, tmp_path: Path) -> None:
        self.lease = NodeLease(client, PREFIX, NodeInfo(name, sip={"t": "127.0.0.1:9"}),
                               lease_s=0.3, renew_s=0.1)
        self.lease.claim()
        self.writer = RecordWriter(CallStore(client, PREFIX),
                                   RecordSpool(tmp_path / name / "spool.jsonl"),
                                   node=name, run=self.lease.run)
        self.writer.start()

    def call(self, call_id: str, *path: str, ended: bool = False,
             trunk: str = "carrier-a") -> None:
        record = CallRecord(call_id, trunk, "13900000001", "400", 1000.0,
                            answered_at=1001.0, path=list(path))
        if ended:
            record.ended_at, record.outcome = 1010.0, "completed"
        assert self.writer.save(record)

    def die(self) -> None:
        """Stops renewing: the lease lapses within 0.3 s."""
        self.writer.stop()
        time.sleep(0.4)


def taken_over(result: str) -> float:
    """hotline_calls_taken_over_total{result} so far, in this process."""
    return next((sample.value for metric in metrics.TAKEN_OVER.collect()
                 for sample in metric.samples
                 if sample.name.endswith("_total") and sample.labels["result"] == result), 0.0)


def takeover(client: redis.Redis, name: str, cut_off: list[CallRecord],
             answers: bool = False, run: str = "run-of-survivor") -> Takeover:
    return Takeover(client, PREFIX, name, run, CallStore(client, PREFIX), cut_off.append,
                    answers=lambda info: answers, wallclock=lambda: 2000.0)


def test_a_dead_nodes_calls_are_closed_once_and_its_callers_handed_on_once(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    dead = Node(redis_client, "node-a", tmp_path)
    dead.call("in-menu", "menu")
    dead.call("bridged", "menu", "connect")
    dead.call("drill-call", "drill")
    dead.call("over", "menu", "bye", ended=True)
    dead.die()
    cut_off: list[CallRecord] = []
    closed_before = taken_over("closed")
    survivors = [takeover(redis_client, f"node-{n}", cut_off) for n in "bc"]
    closed: list[int] = []
    racers = [threading.Thread(target=lambda t=t: closed.append(t.scan())) for t in survivors]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(closed) == [0, 3], "one node takes the dead node over"
    assert sorted(r.id for r in cut_off) == ["bridged", "in-menu"], "the drill's is only closed"
    store = CallStore(redis_client, PREFIX)
    for call_id in ("in-menu", "bridged", "drill-call"):
        record = store.get(call_id)
        assert record is not None and record.node == "node-a"
        assert (record.ended_at, record.end_reason, record.outcome) == (
            2000.0, NODE_FAILURE, "cut off")
    over = store.get("over")
    assert over is not None and over.end_reason is None, "a call that had ended is left alone"
    assert [s.scan() for s in survivors] == [0, 0], "nothing twice"
    assert taken_over("closed") - closed_before == 3
    assert not redis_client.keys(f"{PREFIX}:live:*"), "no call is left listed as up"


def test_a_node_that_answers_keeps_its_calls_until_it_stops_answering(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """A node that has only lost Redis (its lease lapses) still carries its calls."""
    silent = Node(redis_client, "node-a", tmp_path)
    silent.call("up", "menu")
    silent.die()
    cut_off: list[CallRecord] = []
    answering = Takeover(redis_client, PREFIX, "node-b", "run-b", CallStore(redis_client, PREFIX),
                         cut_off.append, answers=lambda info: info.name == "node-a",
                         hold_s=0.3)
    assert answering.scan() == 0 and cut_off == []
    assert redis_client.hget(live_key(PREFIX, "node-a"), "up") == silent.lease.run
    other = takeover(redis_client, "node-c", cut_off)
    assert other.scan() == 0, "probed by node-b just now: nobody else probes it meanwhile"
    time.sleep(0.4)
    answering.answers = lambda info: False  # now it is gone
    assert answering.scan() == 1 and [r.id for r in cut_off] == ["up"]


def test_a_restarted_node_closes_what_its_last_run_left_once_its_spool_is_replayed(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    crashed = Node(redis_client, "node-a", tmp_path)
    crashed.call("before-crash", "menu")
    crashed.writer.stop()  # the process died; the same name starts again
    restarted = Node(redis_client, "node-a", tmp_path / "again")
    restarted.call("now", "menu")
    cut_off: list[CallRecord] = []
    replayed = False
    own = Takeover(redis_client, PREFIX, "node-a", restarted.lease.run,
                   CallStore(redis_client, PREFIX), cut_off.append, ready=lambda: replayed,
                   answers=lambda info: True)
    assert own.scan() == 0, "not before its spool is replayed"
    replayed = True
    assert own.scan() == 1 and [r.id for r in cut_off] == ["before-crash"]
    assert CallStore(redis_client, PREFIX).live("node-a") == {"now": restarted.lease.run}
    restarted.writer.stop()


def test_a_call_the_front_door_moved_to_another_node_is_not_closed(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """The same Call-ID answered by another node (the front door retried the INVITE)
    overwrote the record: the dead node's entry is dropped, the live call left alone."""
    dead = Node(redis_client, "node-a", tmp_path)
    dead.call("moved", "menu")
    dead.die()
    other = Node(redis_client, "node-b", tmp_path)
    other.call("moved", "menu")
    cut_off: list[CallRecord] = []
    assert takeover(redis_client, "node-c", cut_off).scan() == 0 and cut_off == []
    record = CallStore(redis_client, PREFIX).get("moved")
    assert record is not None and record.node == "node-b" and record.ended_at is None
    assert CallStore(redis_client, PREFIX).live("node-a") == {}
    other.writer.stop()


def test_a_node_that_died_while_taking_over_is_taken_over_in_turn(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    dead = Node(redis_client, "node-a", tmp_path)
    dead.call("up", "menu")
    dead.die()
    first = Node(redis_client, "node-b", tmp_path)  # adopts, then dies before closing

    def dies(record: CallRecord) -> None:
        raise redis.ConnectionError("node-b lost power")

    adopter = Takeover(redis_client, PREFIX, "node-b", first.lease.run,
                       CallStore(redis_client, PREFIX), dies, answers=lambda info: False)
    with pytest.raises(redis.ConnectionError):
        adopter.scan()
    assert CallStore(redis_client, PREFIX).live("node-b") == {"up": first.lease.run}
    first.die()
    cut_off: list[CallRecord] = []
    wait_for(lambda: takeover(redis_client, "node-c", cut_off).scan() == 1,
             what="node-c took node-b's adopted call over")
    assert [r.id for r in cut_off] == ["up"]
    record = CallStore(redis_client, PREFIX).get("up")
    assert record is not None and record.node == "node-a" and record.end_reason == NODE_FAILURE


def test_calls_left_for_later_are_taken_over_one_by_one_when_asked(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """A Twilio call goes on at Twilio while its node is dead: its webhooks take it over
    when Twilio next asks about it, not the scan."""
    dead = Node(redis_client, "node-a", tmp_path)
    dead.call("at-twilio", "menu", trunk="twilio")
    dead.call("sip", "menu")
    dead.call("over", "menu", trunk="twilio", ended=True)
    dead.die()
    cut_off: list[CallRecord] = []
    survivor = takeover(redis_client, "node-b", cut_off)
    survivor.later = lambda record: record.trunk == "twilio"
    assert survivor.scan() == 1 and [r.id for r in cut_off] == ["sip"]
    assert survivor.scan() == 0, "left in the dead node's calls, for its webhooks"
    assert CallStore(redis_client, PREFIX).live("node-a") == {"at-twilio": dead.lease.run}
    other = takeover(redis_client, "node-c", cut_off)
    assert other.take_call("at-twilio", "node-a", dead.lease.run)
    assert survivor.take_call("at-twilio", "node-a", dead.lease.run), "closed so already"
    assert [r.id for r in cut_off] == ["sip", "at-twilio"], "handed on once"
    record = CallStore(redis_client, PREFIX).get("at-twilio")
    assert record is not None and (record.end_reason, record.ended_at) == (NODE_FAILURE, 2000.0)
    assert not other.take_call("over", "node-a", dead.lease.run), "it had ended"
    assert not redis_client.keys(f"{PREFIX}:live:*")
    alive = Node(redis_client, "node-d", tmp_path)
    alive.call("up-on-its-run", "menu", trunk="twilio")
    assert not other.take_call("up-on-its-run", "node-d", "an-earlier-run")
    assert CallStore(redis_client, PREFIX).live("node-d") == {"up-on-its-run": alive.lease.run}
    alive.writer.stop()


def test_a_bridged_call_is_handed_to_recover_and_a_caller_who_hung_up_is_not_called_back(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    dead = Node(redis_client, "node-a", tmp_path)
    dead.call("bridged", "connect")
    redis_client.set("test:dialog:bridged", '{"caller": {}, "staff": {}}')
    dead.die()
    handed: list[tuple[str, dict[str, object]]] = []

    def recover(record: CallRecord, dialog: dict[str, object],
                fallback: Callable[[bool], None]) -> None:
        handed.append((record.id, dialog))
        fallback(True)  # the caller's leg answered 481: they had hung up

    cut_off: list[CallRecord] = []
    survivor = Takeover(redis_client, PREFIX, "node-b", "run-b", CallStore(redis_client, PREFIX),
                        cut_off.append, answers=lambda info: False, recover=recover)
    assert survivor.scan() == 1
    assert handed == [("bridged", {"caller": {}, "staff": {}})] and cut_off == []
    record = CallStore(redis_client, PREFIX).get("bridged")
    assert record is not None and record.end_reason == CALLER_GONE
    assert record.outcome == "caller hung up" and record.callback is None
    assert CallStore(redis_client, PREFIX).live("node-b") == {}


def test_node_answers_by_sip_and_not_on_a_closed_port(tmp_path: Path) -> None:
    carrier = Carrier(tmp_path / "carrier")  # any SIP peer that answers OPTIONS
    carrier.start()
    try:
        assert node_answers(NodeInfo("node-a", sip={"t": carrier.address}))
    finally:
        carrier.stop()
    started = time.monotonic()
    assert not node_answers(NodeInfo("node-a", sip={"t": f"127.0.0.1:{free_udp_port()}"}))
    assert time.monotonic() - started < 1.0, "a closed port is known at once (ICMP)"
    assert not node_answers(NodeInfo("node-a", http=f"127.0.0.1:{free_udp_port()}"))
