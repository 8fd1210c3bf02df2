"""A call through a trunk as a flow's channel: prompts with barge-in, DTMF, speech
turns, ringback and bridging, over the RTP engine.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ivr.channels.base import CallEnded, Channel, Heard
from speech import g711
from speech.prompts import PCMU, TELEPHONE_RATE, encode, translation
from speech.recognizer import Recognizer, VadSettings
from speech.synthesizer import Samples
from speech.tones import ringback
from speech.vad import BargeIn
from trunks.voip.leg_state import LegState
from trunks.voip.media import RtpStream
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

PLAYOUT_SLACK_S = 0.1
"""Extra wait after a prompt's length, for the jitter of the far end's playout."""
FRAME_WAIT_S = 0.1
"""Longest wait for one frame of the caller's audio before checking keys and the clock."""
HOLD_CHECK_S = 0.1
"""How often a prompt or a wait looks whether the caller has put the call on hold."""

class Leg(Protocol):
    """What a channel needs of a SIP call, incoming or outgoing."""

    media: RtpStream
    ended: threading.Event
    on_hold: bool

    @property
    def end_reason(self) -> str | None: ...

    def hangup(self) -> None: ...

    def leg_state(self) -> LegState: ...


class SipChannel(Channel):
    """A call through a trunk (from a caller, or a call-back to one), its audio through the
    RTP engine."""

    def __init__(self, call: Leg, clock: Callable[[], float] = time.monotonic,
                 vad: VadSettings | None = None) -> None:
        self.call = call
        self.bridged: OutboundCall | None = None
        """The staff leg the call is bridged to (from its answer), while it is."""
        self._clock = clock
        self._vad = vad or VadSettings()

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Play `samples`; a prompt cut by the caller's hold is played again from its start
        when the call resumes. Without `barge_in`, keys pressed meanwhile stay queued for
        the next menu (type-ahead)."""
        media = self.call.media
        seconds = len(samples) / TELEPHONE_RATE + PLAYOUT_SLACK_S
        while True:
            self._wait_resumed()
            media.play(encode(samples, media.payload_type))
            deadline = self._clock() + seconds
            while (remaining := deadline - self._clock()) > 0 and not self.call.on_hold:
                if not barge_in:
                    if self.call.ended.wait(min(remaining, HOLD_CHECK_S)):
                        raise CallEnded(self.call.end_reason)
                elif (digit := self._digit(min(remaining, HOLD_CHECK_S))) is not None:
                    media.flush()
                    return digit
            if not self.call.on_hold:
                return None
            media.flush()  # held: what is left waits for the resume, played from the start

    def wait_digit(self, timeout: float) -> str | None:
        """The next key within `timeout` seconds of the caller's time: the time the call
        spends on hold does not count."""
        deadline = self._clock() + timeout
        while (remaining := deadline - self._clock()) > 0:
            if self.call.on_hold:
                deadline += self._wait_resumed()
                continue
            digit = self._digit(min(remaining, HOLD_CHECK_S))
            if digit is not None:
                return digit
        return None

    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        """One question and its answer; a hold during either starts it again on resume."""
        while True:
            self._wait_resumed()
            heard = self._ask(samples, recognizer)
            if heard is not None:
                return heard
            self.call.media.flush()

    def _ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard | None:
        """`ask` once; None when the caller held the call meanwhile."""
        media = self.call.media
        decode = g711.ulaw_decode if media.payload_type == PCMU else g711.alaw_decode
        while media.read(0) is not None:  # what the caller said before this prompt is stale
            pass
        recognizer.reset()
        heard: list[bytes] = []
        if samples is not None and len(samples):
            media.play(encode(samples, media.payload_type))
            barge_in = BargeIn()
            deadline = self._clock() + len(samples) / TELEPHONE_RATE + PLAYOUT_SLACK_S
            while self._clock() < deadline:
                if self.call.on_hold:
                    return None
                digit = self._digit(0)
                if digit is not None:
                    media.flush()
                    return Heard(digit=digit)
                frame = media.read(FRAME_WAIT_S)
                if frame is not None and barge_in.push(decode(frame).tobytes()):
                    media.flush()
                    heard = barge_in.preroll()
                    break
        return self._listen(recognizer, heard, decode)

    def _listen(self, recognizer: Recognizer, heard: list[bytes],
                decode: Callable[[bytes], Samples]) -> Heard | None:
        """One turn: feed the caller's audio to `recognizer` until its final or no-input
        (None if the caller holds the call first). The wall clock bounds the wait too,
        for a caller who sends no audio at all."""
        media, limits = self.call.media, self._vad
        started = self._clock()
        speaking = False
        pending = [b"".join(heard)] if heard else []
        while True:
            for pcm in pending:
                for event in recognizer.accept(pcm):
                    if event.kind == "start":
                        speaking = True
                    elif event.kind == "final":
                        return Heard(text=event.text)
                    elif event.kind == "no-input":
                        return Heard()
            if self.call.on_hold:
                return None
            digit = self._digit(0)
            if digit is not None:
                return Heard(digit=digit)
            waited = self._clock() - started
            if waited > (limits.no_input_ms + limits.max_utterance_ms) / 1000 + 1 or (
                    not speaking and waited > limits.no_input_ms / 1000 + 1):
                return Heard(text=recognizer.finish().text)
            frame = media.read(FRAME_WAIT_S)
            pending = [] if frame is None else [decode(frame).tobytes()]

    def ring(self, leg: OutboundCall, seconds: float) -> Outcome:
        media = self.call.media
        media.flush()
        media.play(encode(ringback(seconds), media.payload_type))
        early = False
        try:
            while (outcome := leg.wait(0.05)) is Outcome.PENDING:
                if self.call.ended.is_set():
                    leg.cancel()
                    raise CallEnded(self.call.end_reason)
                if leg.early_media and not early:  # the callee's network plays its own tones
                    early = True
                    media.flush()
                    leg.media.bridge(media, translation(leg.media.payload_type,
                                                        media.payload_type))
        finally:
            leg.media.bridge(None)
            media.flush()
        if self.call.ended.is_set():  # the call is ending: the leg goes too, even if answered
            leg.hangup()
            raise CallEnded(self.call.end_reason)
        if outcome is Outcome.ANSWERED:
            self.bridged = leg  # its dialog is saved from now (`dialog_state`)
        return outcome

    def bridge(self, leg: OutboundCall) -> None:
        caller, callee = self.call.media, leg.media
        caller.bridge(callee, translation(caller.payload_type, callee.payload_type))
        callee.bridge(caller, translation(callee.payload_type, caller.payload_type))
        self.bridged = leg
        try:
            while not leg.ended.is_set():
                if self.call.ended.wait(0.05):
                    leg.hangup()
                    raise CallEnded(self.call.end_reason)
        finally:
            self.bridged = None
            caller.bridge(None)
            callee.bridge(None)

    def dialog_state(self) -> dict[str, Any] | None:
        """Both legs' dialogs while the call is bridged to staff (None otherwise), for
        another node to take the call up (`ivr.calls.recovery`)."""
        leg = self.bridged
        if leg is None or leg.ended.is_set() or self.call.ended.is_set():
            return None
        return {"caller": self.call.leg_state().as_dict(), "staff": leg.leg_state().as_dict()}

    def leg_quality(self, leg: OutboundCall) -> dict[str, float | int | None]:
        return leg.media.quality().as_dict()

    def hangup(self) -> None:
        self.call.hangup()

    def _wait_resumed(self) -> float:
        """Wait while the caller holds the call; return how long that was."""
        held_at = self._clock()
        while self.call.on_hold:
            if self.call.ended.wait(HOLD_CHECK_S):
                raise CallEnded(self.call.end_reason)
        return self._clock() - held_at

    def _digit(self, timeout: float) -> str | None:
        if self.call.ended.is_set():
            raise CallEnded(self.call.end_reason)
        try:
            return self.call.media.digits.get(timeout=timeout)
        except queue.Empty:
            return None


__all__ = ["Leg", "SipChannel"]
