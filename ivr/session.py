"""Running a flow on a call: prompts with barge-in, digit collection, the path taken.

`Channel` is what a flow needs from a call; `SipChannel` provides it for a call
from a trunk. `FlowRunner` walks the nodes, recording the path and the digits
in the call's `CallRecord`.
"""

from __future__ import annotations

import abc
import datetime
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from failover.router import Dialer
from ivr import metrics
from ivr.drill import DrillService
from ivr.flow import (
    Flow,
    ForwardNode,
    GotoNode,
    HangupNode,
    HoursNode,
    MenuNode,
    SayNode,
    VoicebotNode,
    _Spoken,
)
from ivr.oncall import OnCall
from ivr.records import CallRecord, CallStore
from ivr.voicebot import Heard, VoiceBot
from speech import g711
from speech.prompts import PCMU, TELEPHONE_RATE, PromptCache, encode, translation
from speech.recognizer import Recognizer, VadSettings
from speech.synthesizer import Samples
from speech.tones import ringback
from speech.vad import BargeIn
from trunks.voip.inbound import InboundCall
from trunks.voip.media import RtpStream
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

MAX_STEPS = 200
"""Nodes visited before a flow is considered to loop forever and the call ends."""
PLAYOUT_SLACK_S = 0.1
"""Extra wait after a prompt's length, for the jitter of the far end's playout."""
FRAME_WAIT_S = 0.1
"""Longest wait for one frame of the caller's audio before checking keys and the clock."""


class CallEnded(Exception):
    """The call ended (the caller hung up, say); the flow stops. The argument, if any,
    says why."""


@dataclass(frozen=True)
class Dialled:
    """How a call a channel placed itself to a person went."""

    outcome: Outcome
    trunk: str
    status: str | None = None
    reason: str | None = None


class Channel(abc.ABC):
    """What a flow does with a call."""

    dials_out: ClassVar[bool] = False
    """Whether the channel places forwarded calls itself (`dial`); otherwise the runner
    places them through the trunks and hands them to `ring` and `bridge`."""

    @abc.abstractmethod
    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Play 8 kHz audio to the end; with `barge_in`, stop at a digit and return it."""

    @abc.abstractmethod
    def wait_digit(self, timeout: float) -> str | None:
        """The next DTMF digit within `timeout` seconds, or None."""

    @abc.abstractmethod
    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        """Play `samples` (if any) and hear the caller's answer: speaking or a key stops
        the prompt (barge-in); then one turn of speech, a key, or nothing in time."""

    @abc.abstractmethod
    def ring(self, leg: OutboundCall, seconds: float) -> Outcome:
        """Let the caller hear ringback (or the callee's early media) until `leg` is
        answered or fails; return its outcome."""

    @abc.abstractmethod
    def bridge(self, leg: OutboundCall) -> None:
        """Connect the caller and the answered `leg` both ways until `leg` hangs up."""

    @abc.abstractmethod
    def hangup(self) -> None:
        """End the call."""

    def dial(self, number: str, ring_s: float) -> Dialled:
        """For a channel that `dials_out`: ring `number` for up to `ring_s` while the
        caller hears ringback; when answered, connect the two until either hangs up."""
        raise TypeError(f"{type(self).__name__} does not dial out")

    def leave_message(self, samples: Samples, recognizer: Recognizer,
                      max_s: int) -> str | None:
        """Play `samples`, record the caller's message (at most `max_s` seconds) and
        transcribe it; None when the channel takes no messages (a SIP call: the voice
        bot has heard the caller already)."""
        return None


class Leg(Protocol):
    """What a channel needs of a SIP call, incoming or outgoing."""

    media: RtpStream
    ended: threading.Event

    @property
    def end_reason(self) -> str | None: ...

    def hangup(self) -> None: ...


class SipChannel(Channel):
    """A call through a trunk (from a caller, or a call-back to one), its audio through the
    RTP engine."""

    def __init__(self, call: Leg, clock: Callable[[], float] = time.monotonic,
                 vad: VadSettings | None = None) -> None:
        self.call = call
        self._clock = clock
        self._vad = vad or VadSettings()

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        media = self.call.media
        media.play(encode(samples, media.payload_type))
        seconds = len(samples) / TELEPHONE_RATE + PLAYOUT_SLACK_S
        if not barge_in:  # keys pressed now stay queued for the next menu (type-ahead)
            if self.call.ended.wait(seconds):
                raise CallEnded(self.call.end_reason)
            return None
        digit = self.wait_digit(seconds)
        if digit is not None:
            media.flush()
        return digit

    def wait_digit(self, timeout: float) -> str | None:
        deadline = self._clock() + timeout
        while (remaining := deadline - self._clock()) > 0:
            digit = self._digit(min(remaining, 0.1))
            if digit is not None:
                return digit
        return None

    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
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
                decode: Callable[[bytes], Samples]) -> Heard:
        """One turn: feed the caller's audio to `recognizer` until its final or no-input.
        The wall clock bounds the wait too, for a caller who sends no audio at all."""
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
        return outcome

    def bridge(self, leg: OutboundCall) -> None:
        caller, callee = self.call.media, leg.media
        caller.bridge(callee, translation(caller.payload_type, callee.payload_type))
        callee.bridge(caller, translation(callee.payload_type, caller.payload_type))
        try:
            while not leg.ended.is_set():
                if self.call.ended.wait(0.05):
                    leg.hangup()
                    raise CallEnded(self.call.end_reason)
        finally:
            caller.bridge(None)
            callee.bridge(None)

    def hangup(self) -> None:
        self.call.hangup()

    def _digit(self, timeout: float) -> str | None:
        if self.call.ended.is_set():
            raise CallEnded(self.call.end_reason)
        try:
            return self.call.media.digits.get(timeout=timeout)
        except queue.Empty:
            return None


class FlowRunner:
    """Runs `flow` on calls; one instance serves every call."""

    def __init__(self, flow: Flow, prompts: PromptCache,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
                     datetime.UTC), oncall: OnCall | None = None,
                 dialer: Dialer | None = None, bot: VoiceBot | None = None) -> None:
        if flow.forwards and (oncall is None or dialer is None):
            raise ValueError("the flow forwards calls: it needs an on-call roster and a dialer")
        if flow.voicebots and bot is None:
            raise ValueError("the flow has a voice bot: it needs one")
        self.flow = flow
        self.prompts = prompts
        self.now = now
        self.oncall = oncall
        self.dialer = dialer
        self.bot = bot

    def run(self, channel: Channel, record: CallRecord, start: str | None = None) -> None:
        """Walk the flow from `start` (default: the flow's) until it hangs up, the caller
        does, or it loops."""
        name: str | None = start or self.flow.start
        try:
            for _ in range(MAX_STEPS):
                if name is None:
                    return
                record.path.append(name)
                name = self._step(self.flow.nodes[name], channel, record)
            logger.error("Call %s: flow exceeded %d steps; hanging up", record.id, MAX_STEPS)
            record.outcome = "flow loop"
        except CallEnded as ended:
            record.outcome = record.outcome or (ended.args[0] if ended.args and ended.args[0]
                                                else "caller hung up")
            return
        channel.hangup()

    def _step(self, node: object, channel: Channel, record: CallRecord) -> str | None:
        if isinstance(node, SayNode):
            self._say(node, channel, barge_in=False)
            return node.next
        if isinstance(node, MenuNode):
            return self._menu(node, channel, record)
        if isinstance(node, HoursNode):
            return node.open_next if node.is_open(self.now()) else node.closed_next
        if isinstance(node, ForwardNode):
            return self._forward(node, channel, record)
        if isinstance(node, VoicebotNode):
            assert self.bot is not None
            return self.bot.run(node, channel, record)
        if isinstance(node, GotoNode):
            return node.next
        if isinstance(node, HangupNode):
            self._say(node, channel, barge_in=False)
            record.outcome = record.outcome or "completed"
            channel.hangup()
            return None
        raise TypeError(f"unknown node {node!r}")

    def _menu(self, node: MenuNode, channel: Channel, record: CallRecord) -> str:
        for attempt in range(node.retries):
            digit = self._say(node, channel, barge_in=True)
            if digit is None:
                digit = channel.wait_digit(node.timeout_s)
            if digit is not None:
                record.digits += digit
                if digit in node.options:
                    return node.options[digit]
            if attempt + 1 < node.retries:
                channel.play(self.prompts.text(node.no_input if digit is None else node.invalid),
                             barge_in=False)
        return node.failure

    def _forward(self, node: ForwardNode, channel: Channel, record: CallRecord) -> str | None:
        """Ring each person in turn, each through the best trunk and then the next ones
        while set-ups fail on the trunk; a refusal or no answer moves to the next person."""
        assert self.oncall is not None and self.dialer is not None
        self._say(node, channel, barge_in=False)
        for key in self.dialer.available(self.oncall.roster(self.now()))[:node.people]:
            person = self.oncall.people[key]
            if channel.dials_out:
                with self.dialer.busy(key):
                    dialled = channel.dial(person.phone, node.ring_s)
                record.forward_attempts.append({
                    "person": key, "trunk": dialled.trunk, "outcome": str(dialled.outcome),
                    "status": dialled.status, "reason": dialled.reason})
                if dialled.outcome is Outcome.ANSWERED:
                    record.forwarded_to = key
                    record.outcome = "forwarded"
                    logger.info("Call %s forwarded to %s through %s", record.id,
                                self.oncall.name(key), dialled.trunk)
                    return node.next
                continue
            tried: set[str] = set()
            while (placed := self.dialer.dial(person.phone, node.ring_s,
                                              frozenset(tried))) is not None:
                trunk, leg = placed
                tried.add(trunk)
                outcome = channel.ring(leg, node.ring_s)
                record.forward_attempts.append({
                    "person": key, "trunk": trunk, "outcome": str(outcome),
                    "status": leg.status, "reason": leg.reason})
                if outcome is Outcome.ANSWERED:
                    record.forwarded_to = key
                    record.outcome = "forwarded"
                    logger.info("Call %s forwarded to %s through %s", record.id,
                                self.oncall.name(key), trunk)
                    with self.dialer.busy(key):
                        channel.bridge(leg)
                    return node.next
                if outcome is not Outcome.TRUNK_FAILED:
                    break
        return node.failure

    def _say(self, node: _Spoken, channel: Channel, barge_in: bool) -> str | None:
        samples = (self.prompts.file(node.file) if node.file is not None else
                   self.prompts.text(node.text) if node.text else None)
        if samples is None:
            return None
        return channel.play(samples, barge_in)


class CallHandler:
    """What a trunk's endpoint does with each call: answer, run the flow, keep the record."""

    def __init__(self, runner: FlowRunner, store: CallStore, trunk: str,
                 wallclock: Callable[[], float] = time.time,
                 vad: VadSettings | None = None, drill: DrillService | None = None,
                 on_cut_off: Callable[[InboundCall, CallRecord], None] | None = None) -> None:
        self.runner, self.store, self.trunk = runner, store, trunk
        self._wallclock = wallclock
        self._vad = vad
        self.drill = drill
        self.on_cut_off = on_cut_off
        """Told of each call that ended without a goodbye, before its record is saved."""

    def __call__(self, call: InboundCall) -> None:
        record = CallRecord(call.id, self.trunk, call.caller, call.called, call.started_at)
        self.store.save_quietly(record)
        metrics.call_started("sip")
        try:
            call.answer()
            record.answered_at = self._wallclock()
            if self.drill is not None and self.drill.claims(call):
                record.path.append("drill")
                record.outcome = self.drill.responder(call)
            else:
                self.runner.run(SipChannel(call, vad=self._vad), record)
        finally:
            call.hangup()
            record.ended_at = self._wallclock()
            record.end_reason = call.end_reason
            if call.cut_off and self.on_cut_off is not None and record.path != ["drill"]:
                try:
                    self.on_cut_off(call, record)
                except Exception:  # the call's record must still be saved
                    logger.exception("Call %s: handling its cut-off failed", call.id)
            self.store.save_quietly(record)
            metrics.call_ended("sip", record.outcome)
            logger.info("Call %s from %s: %s via %s", call.id, call.caller, record.outcome,
                        " > ".join(record.path))


__all__ = ["CallEnded", "CallHandler", "Channel", "Dialled", "FlowRunner", "SipChannel"]
