"""baresip, a real softphone, calls the hotline through a Kamailio carrier: it walks the
menu with RFC 4733 digits, hangs up or is hung up on, is forwarded to a second baresip
(audio checked both ways by tone), and offers another ptime, another codec, and hold."""

from __future__ import annotations

import re
import time

import pytest
import redis

from ivr.records import CallRecord, CallStore
from tests.baresip_phone import Baresip
from tests.conftest import wait_for
from tests.interop.conftest import StartHotline, StartPhone
from tests.peers import Carrier
from tests.tone_phone import dominant_hz, purity

pytestmark = pytest.mark.slow

MENU = """\
start: menu
voice: {engine: espeak}
nodes:
  menu:
    type: menu
    text: For support press one.
    options: {"1": done}
    timeout_s: 20
    retries: 1
    failure: done
  done: {type: hangup, text: Goodbye.}
"""
FORWARD = """\
start: connect
voice: {engine: espeak}
nodes:
  connect: {type: forward, ring_s: 5, next: bye, failure: nobody}
  bye: {type: hangup}
  nobody: {type: hangup, text: Nobody is free.}
"""
ONCALL = """\
timezone: UTC
people:
  alice: {name: Alice, phone: "1001"}
rotation: {order: [alice], start: 2026-01-05, every_days: 1}
"""
CALLER = "13900000000"
CALLER_HZ, STAFF_HZ = 700.0, 1300.0
HOLD_S = 0.5
"""How long the hold test listens for RTP the hotline must not send (25 packets' time)."""


def dial(phone: Baresip, carrier: Carrier) -> float:
    """Call the hotline through `carrier`; when its answer came (monotonic time)."""
    phone.dial(f"sip:hotline@{carrier.address}")
    return float(phone.wait_event("CALL_ESTABLISHED")["at"])


def hears_prompt(phone: Baresip) -> None:
    """Wait until the phone has heard half a second of the menu's speech."""
    wait_for(lambda: phone.recording().loud_s() >= 0.5, what="the menu prompt")


def responses(phone: Baresip, status: str, method: str) -> list[str]:
    """The `status` responses ("200 OK") the phone received to its `method` requests."""
    return [message for message in phone.received(f"SIP/2.0 {status}")
            if re.search(rf"^CSeq: \d+ {method}$", message, re.M)]


def finished_record(client: redis.Redis) -> CallRecord:
    store = CallStore(client)
    wait_for(lambda: bool(store.recent(1)) and store.recent(1)[0].ended_at is not None,
             what="the call's record")
    [record] = store.recent(5)
    return record


def test_menu_walked_with_rfc4733_digits_then_the_hotline_hangs_up(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    carrier = hotline(MENU)
    caller = baresip(CALLER, CALLER_HZ)
    dial(caller, carrier)
    hears_prompt(caller)
    caller.send_digits("1")
    assert caller.wait_event("CALL_CLOSED")["param"] == "Connection reset by peer"
    record = finished_record(redis_client)
    assert record.path == ["menu", "done"] and record.digits == "1"
    assert record.outcome == "completed" and record.end_reason == "hung up by hotline"
    assert record.caller == CALLER and record.trunk == "carrier-a"
    assert caller.received("BYE sip:") and caller.sent("SIP/2.0 200 OK")


def test_caller_hangs_up_during_the_menu(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    carrier = hotline(MENU)
    caller = baresip(CALLER, CALLER_HZ)
    dial(caller, carrier)
    hears_prompt(caller)
    caller.hangup()
    assert caller.wait_event("CALL_CLOSED")["param"] == "Connection reset by user"
    record = finished_record(redis_client)
    assert record.path == ["menu"] and record.digits == ""
    assert record.outcome == "caller hung up" and record.end_reason == "caller hung up"
    wait_for(lambda: bool(responses(caller, "200 OK", "BYE")), what="200 OK to the BYE")


def test_forward_answered_by_a_second_baresip_carries_audio_both_ways(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    staff = baresip("1001", STAFF_HZ)  # Alice's number: baresip takes calls to its user
    carrier = hotline(FORWARD, ONCALL, staff=staff)
    caller = baresip(CALLER, CALLER_HZ)
    answered = dial(caller, carrier)
    staff.wait_event("CALL_INCOMING")
    staff.accept()
    talk_starts = staff.wait_event("CALL_ESTABLISHED")["at"] - answered + 0.3
    wait_for(lambda: staff.recording().loud_s() >= 1.5, what="1.5 s of the caller's tone")
    talk_ends = time.monotonic() - answered
    staff.hangup()
    staff.wait_event("CALL_CLOSED")
    assert caller.wait_event("CALL_CLOSED")["param"] == "Connection reset by peer"
    record = finished_record(redis_client)
    assert record.path == ["connect", "bye"] and record.outcome == "forwarded"
    assert record.forwarded_to == "alice" and record.end_reason == "hung up by hotline"
    assert [(a["outcome"], a["status"]) for a in record.forward_attempts] == [("answered", 200)]
    # Recordings start at each phone's answer; the caller's holds ringback before the talk.
    heard_by_staff = staff.recording().span(since_s=0.3)
    heard_by_caller = caller.recording().span(talk_starts, talk_ends)
    assert abs(dominant_hz(heard_by_staff) - CALLER_HZ) < 10
    assert abs(dominant_hz(heard_by_caller) - STAFF_HZ) < 10
    assert purity(heard_by_staff, CALLER_HZ) > 0.99
    assert purity(heard_by_caller, STAFF_HZ) > 0.99


def test_a_30_ms_caller_is_answered_with_20_ms_and_hears_the_menu(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    carrier = hotline(MENU)
    caller = baresip(CALLER, CALLER_HZ, ptime=30)
    dial(caller, carrier)
    [offer] = caller.sent("INVITE")
    [answer] = responses(caller, "200 OK", "INVITE")
    assert "a=ptime:30" in offer and "a=ptime:20" in answer
    hears_prompt(caller)
    # baresip follows the answer's ptime, so the hotline gets the 20 ms frames it takes
    assert re.search(r"encode: PCMU .* ptime=20ms", caller.execute("audio_debug"))
    caller.send_digits("1")
    caller.wait_event("CALL_CLOSED")
    record = finished_record(redis_client)
    assert record.path == ["menu", "done"] and record.digits == "1"


def test_an_opus_only_caller_is_refused_with_488(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    carrier = hotline(MENU)
    caller = baresip(CALLER, CALLER_HZ, codecs=("opus",))
    caller.dial(f"sip:hotline@{carrier.address}")
    assert caller.wait_event("CALL_CLOSED")["param"] == "488 Not Acceptable Here"
    [offer] = caller.sent("INVITE")
    assert "opus/48000/2" in offer and "PCM" not in offer
    assert CallStore(redis_client).recent(1) == []


def test_hold_and_resume_from_baresip(
        hotline: StartHotline, baresip: StartPhone, redis_client: redis.Redis) -> None:
    carrier = hotline(MENU)
    caller = baresip(CALLER, CALLER_HZ)
    dial(caller, carrier)
    hears_prompt(caller)
    held = time.monotonic()
    caller.hold()
    assert caller.wait_event("CALL_REMOTE_SDP", after=held)["param"] == "answer"
    on_hold = caller.rtp_received()
    time.sleep(HOLD_S)  # an absence takes a while to show
    sent = caller.rtp_received() - on_hold
    assert sent <= 2, f"the hotline sent {sent} RTP packets in {HOLD_S:g} s of hold"
    resumed = time.monotonic()
    caller.resume()
    assert caller.wait_event("CALL_REMOTE_SDP", after=resumed)["param"] == "answer"
    [_, hold, resume] = responses(caller, "200 OK", "INVITE")
    assert "a=recvonly" in hold and "a=sendrecv" in resume
    before = caller.rtp_received()
    wait_for(lambda: caller.rtp_received() >= before + 10, what="RTP after the resume")
    caller.send_digits("1")  # the call goes on: the menu still takes the key
    assert caller.wait_event("CALL_CLOSED")["param"] == "Connection reset by peer"
    record = finished_record(redis_client)
    assert record.path == ["menu", "done"] and record.digits == "1"
