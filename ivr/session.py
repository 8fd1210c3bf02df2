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
import time
from collections.abc import Callable

from ivr.flow import Flow, GotoNode, HangupNode, HoursNode, MenuNode, SayNode, _Spoken
from ivr.records import CallRecord, CallStore
from speech.prompts import TELEPHONE_RATE, PromptCache, encode
from speech.synthesizer import Samples
from trunks.voip.endpoint import InboundCall

logger = logging.getLogger(__name__)

MAX_STEPS = 200
"""Nodes visited before a flow is considered to loop forever and the call ends."""
PLAYOUT_SLACK_S = 0.1
"""Extra wait after a prompt's length, for the jitter of the far end's playout."""


class CallEnded(Exception):
    """The caller hung up; the flow stops."""


class Channel(abc.ABC):
    """What a flow does with a call."""

    @abc.abstractmethod
    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Play 8 kHz audio to the end; with `barge_in`, stop at a digit and return it."""

    @abc.abstractmethod
    def wait_digit(self, timeout: float) -> str | None:
        """The next DTMF digit within `timeout` seconds, or None."""

    @abc.abstractmethod
    def hangup(self) -> None:
        """End the call."""


class SipChannel(Channel):
    """A call from a trunk, its audio through the RTP engine."""

    def __init__(self, call: InboundCall, clock: Callable[[], float] = time.monotonic) -> None:
        self.call = call
        self._clock = clock

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        media = self.call.media
        media.play(encode(samples, media.payload_type))
        seconds = len(samples) / TELEPHONE_RATE + PLAYOUT_SLACK_S
        if not barge_in:  # keys pressed now stay queued for the next menu (type-ahead)
            if self.call.ended.wait(seconds):
                raise CallEnded
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

    def hangup(self) -> None:
        self.call.hangup()

    def _digit(self, timeout: float) -> str | None:
        if self.call.ended.is_set():
            raise CallEnded
        try:
            return self.call.media.digits.get(timeout=timeout)
        except queue.Empty:
            return None


class FlowRunner:
    """Runs `flow` on calls; one instance serves every call."""

    def __init__(self, flow: Flow, prompts: PromptCache,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
                     datetime.UTC)) -> None:
        self.flow = flow
        self.prompts = prompts
        self.now = now

    def run(self, channel: Channel, record: CallRecord) -> None:
        """Walk the flow from its start until it hangs up, the caller does, or it loops."""
        name: str | None = self.flow.start
        try:
            for _ in range(MAX_STEPS):
                if name is None:
                    return
                record.path.append(name)
                name = self._step(self.flow.nodes[name], channel, record)
            logger.error("Call %s: flow exceeded %d steps; hanging up", record.id, MAX_STEPS)
            record.outcome = "flow loop"
        except CallEnded:
            record.outcome = record.outcome or "caller hung up"
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

    def _say(self, node: _Spoken, channel: Channel, barge_in: bool) -> str | None:
        samples = (self.prompts.file(node.file) if node.file is not None else
                   self.prompts.text(node.text) if node.text else None)
        if samples is None:
            return None
        return channel.play(samples, barge_in)


class CallHandler:
    """What a trunk's endpoint does with each call: answer, run the flow, keep the record."""

    def __init__(self, runner: FlowRunner, store: CallStore, trunk: str,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.runner, self.store, self.trunk = runner, store, trunk
        self._wallclock = wallclock

    def __call__(self, call: InboundCall) -> None:
        record = CallRecord(call.id, self.trunk, call.caller, call.called, call.started_at)
        self.store.save_quietly(record)
        try:
            call.answer()
            record.answered_at = self._wallclock()
            self.runner.run(SipChannel(call), record)
        finally:
            call.hangup()
            record.ended_at = self._wallclock()
            record.end_reason = call.end_reason
            self.store.save_quietly(record)
            logger.info("Call %s from %s: %s via %s", call.id, call.caller, record.outcome,
                        " > ".join(record.path))


__all__ = ["CallEnded", "CallHandler", "Channel", "FlowRunner", "SipChannel"]
