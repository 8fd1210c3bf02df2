"""The SIP channel while the caller holds the call: the flow waits, and a prompt cut by
the hold is played again from its start on resume (RFC 3264 6.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ivr.channels.base import CallEnded
from ivr.channels.sip import SipChannel
from speech.prompts import PCMU
from speech.tones import tone
from tests.conftest import wait_for
from tests.sip_caller import RtpCounter
from trunks.voip.media import RtpEngine, RtpStream
from trunks.voip.rtp import parse_rtp

SILENT = b"\xff" * 160


@dataclass
class HeldLeg:
    """A call leg whose hold the test switches as a re-INVITE would."""

    media: RtpStream
    ended: threading.Event = field(default_factory=threading.Event)
    on_hold: bool = False
    end_reason: str | None = None

    def hold(self, on_hold: bool) -> None:
        self.on_hold = on_hold
        self.media.sending = not on_hold

    def hangup(self) -> None:
        self.ended.set()


@pytest.fixture
def phone() -> Iterator[RtpCounter]:
    counter = RtpCounter()
    yield counter
    counter.close()


@pytest.fixture
def leg(engine: RtpEngine, phone: RtpCounter) -> Iterator[HeldLeg]:
    stream = engine.open(PCMU, remote=("127.0.0.1", phone.port))
    yield HeldLeg(stream)
    stream.close()


def heard(phone: RtpCounter, since: float) -> int:
    """Packets of the prompt (not silence) the phone received since `since`."""
    return sum(1 for at, data, _ in list(phone.arrivals)
               if at >= since and parse_rtp(data).payload != SILENT)


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `work` in a thread; its result (or the exception it raised) lands in the list."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_prompt_cut_by_hold_is_played_again_from_its_start(leg: HeldLeg,
                                                            phone: RtpCounter) -> None:
    channel = SipChannel(leg)
    prompt = tone(1000, 0.6)
    started = time.monotonic()
    player, _ = in_thread(lambda: channel.play(prompt, barge_in=False))
    wait_for(lambda: heard(phone, started) >= 10, what="the prompt begins")
    leg.hold(True)
    time.sleep(0.1)
    held_at = time.monotonic()
    time.sleep(1.0)  # longer than what was left of the prompt
    assert player.is_alive(), "the flow waits while the caller holds"
    assert heard(phone, held_at) == 0
    leg.hold(False)
    resumed_at = time.monotonic()
    player.join(5)
    assert not player.is_alive()
    assert heard(phone, resumed_at) >= 28, "the whole 0.6 s prompt again (30 packets)"


def test_time_on_hold_does_not_count_against_a_wait_for_a_key(leg: HeldLeg) -> None:
    channel = SipChannel(leg)
    waiter, result = in_thread(lambda: channel.wait_digit(0.5))
    time.sleep(0.1)
    leg.hold(True)
    time.sleep(0.8)
    assert waiter.is_alive(), "the caller's 0.5 s are not spent while held"
    leg.hold(False)
    leg.media.digits.put("7")
    waiter.join(2)
    assert result == ["7"]


def test_hanging_up_while_held_ends_the_wait(leg: HeldLeg) -> None:
    channel = SipChannel(leg)
    leg.hold(True)
    waiter, result = in_thread(lambda: channel.play(tone(1000, 0.2), barge_in=True))
    time.sleep(0.2)
    leg.ended.set()
    waiter.join(2)
    assert not waiter.is_alive() and [type(r) for r in result] == [CallEnded]
