"""Running a flow on a call: prompts with barge-in, digit collection, forwards, the
voice bot, and the path taken, recorded in the call's `CallRecord`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from failover.router import Dialer, Need
from ivr.channels.base import CallEnded, Channel
from ivr.clock import Now, utc_now
from ivr.flow.model import (
    Flow,
    ForwardNode,
    GotoNode,
    HangupNode,
    HoursNode,
    MenuNode,
    SayNode,
    Spoken,
    VoicebotNode,
)
from ivr.flow.oncall import OnCall
from ivr.flow.voicebot import VoiceBot
from ivr.records import CallRecord
from speech.prompts import PromptCache
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

BUSY_ELSEWHERE = "busy elsewhere"
"""A forward attempt's outcome when another node had the person busy."""

MAX_STEPS = 200
"""Nodes visited before a flow is considered to loop forever and the call ends."""


class FlowRunner:
    """Runs `flow` on calls; one instance serves every call."""

    def __init__(self, flow: Flow, prompts: PromptCache,
                 now: Now = utc_now, oncall: OnCall | None = None,
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

    def run(self, channel: Channel, record: CallRecord, start: str | None = None,
            on_step: Callable[[CallRecord], None] | None = None) -> None:
        """Walk the flow from `start` (default: the flow's) until it hangs up, the caller
        does, or it loops; `on_step` is told of the record at each node reached and when a
        forward is answered (it must not block: `RecordWriter.update`)."""
        name: str | None = start or self.flow.start
        try:
            for _ in range(MAX_STEPS):
                if name is None:
                    return
                record.visit(name)
                if on_step is not None:
                    on_step(record)
                name = self._step(self.flow.nodes[name], channel, record, on_step)
            logger.error("Call %s: flow exceeded %d steps; hanging up", record.id, MAX_STEPS)
            record.outcome = "flow loop"
        except CallEnded as ended:
            record.outcome = record.outcome or (ended.args[0] if ended.args and ended.args[0]
                                                else "caller hung up")
            return
        channel.hangup()

    def resume(self, channel: Channel, leg: OutboundCall, record: CallRecord,
               on_step: Callable[[CallRecord], None] | None = None) -> None:
        """Carry on a call that a node which died had bridged to staff on `leg` (this
        node took both legs up): bridge them again, then walk the flow from the node after
        the forward, the last in `record.path`, as `run` would have."""
        node = self.flow.nodes.get(record.path[-1]) if record.path else None
        after = node.next if isinstance(node, ForwardNode) else None
        busy = (self.dialer.busy(record.forwarded_to, take_over=True)
                if self.dialer is not None and record.forwarded_to else contextlib.nullcontext())
        try:
            with busy:
                channel.bridge(leg)
        except CallEnded as ended:
            record.outcome = record.outcome or (ended.args[0] if ended.args and ended.args[0]
                                                else "caller hung up")
            return
        finally:
            record.note_forward_quality(channel.leg_quality(leg))
        if after is None:
            channel.hangup()
        else:
            self.run(channel, record, start=after, on_step=on_step)

    def _step(self, node: object, channel: Channel, record: CallRecord,
              on_step: Callable[[CallRecord], None] | None) -> str | None:
        if isinstance(node, SayNode):
            self._say(node, channel, barge_in=False)
            return node.next
        if isinstance(node, MenuNode):
            return self._menu(node, channel, record)
        if isinstance(node, HoursNode):
            return node.open_next if node.is_open(self.now()) else node.closed_next
        if isinstance(node, ForwardNode):
            return self._forward(node, channel, record, on_step)
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

    def _forward(self, node: ForwardNode, channel: Channel, record: CallRecord,
                 on_step: Callable[[CallRecord], None] | None) -> str | None:
        """Ring each person in turn, each through the best trunk and then the next ones
        while set-ups fail on the trunk; a refusal or no answer moves to the next person,
        as does a person another node has busy (rung or talking) by the time we ring.
        An answered call is bridged, and its sound is kept in its attempt when it ends.
        A person is marked busy from before their phone rings until the call ends."""
        assert self.oncall is not None and self.dialer is not None
        self._say(node, channel, barge_in=False)
        for key in self.dialer.available(self.oncall.roster(self.now()))[:node.people]:
            with self.dialer.busy(key) as free:
                if not free:
                    record.add_forward_attempt(key, "", BUSY_ELSEWHERE, None,
                                               "busy on another node")
                    continue
                if self._ring(key, node, channel, record, on_step):
                    return node.next
        return node.failure

    def _ring(self, key: str, node: ForwardNode, channel: Channel, record: CallRecord,
              on_step: Callable[[CallRecord], None] | None) -> bool:
        """Ring person `key` (through each trunk in turn while set-ups fail on it), and
        bridge the call if they answer; whether they did."""
        assert self.oncall is not None and self.dialer is not None
        person = self.oncall.people[key]
        if channel.dials_out:
            dialled = channel.dial(person.phone, node.ring_s)
            record.add_forward_attempt(key, dialled.trunk, str(dialled.outcome),
                                       dialled.status, dialled.reason)
            if dialled.outcome is Outcome.ANSWERED:
                self._forwarded(record, key, dialled.trunk)
            return dialled.outcome is Outcome.ANSWERED
        tried: set[str] = set()
        while True:
            plan = self.dialer.plan(Need.FORWARD, frozenset(tried))
            record.note_routing(plan.notes)
            placed = self.dialer.place(plan, person.phone, node.ring_s)
            if placed is None:
                return False
            trunk, leg = placed
            tried.add(trunk)
            try:
                outcome = channel.ring(leg, node.ring_s)
            except CallEnded:  # the caller hung up while the phone rang: cancelled
                record.add_forward_attempt(key, trunk, str(Outcome.CANCELLED), leg.status,
                                           leg.reason)
                raise
            record.add_forward_attempt(key, trunk, str(outcome), leg.status, leg.reason)
            if outcome is Outcome.ANSWERED:
                self._forwarded(record, key, trunk)
                if on_step is not None:
                    on_step(record)
                try:
                    channel.bridge(leg)
                finally:
                    record.note_forward_quality(channel.leg_quality(leg))
                return True
            if outcome is not Outcome.TRUNK_FAILED:
                return False

    def _forwarded(self, record: CallRecord, person: str, trunk: str) -> None:
        assert self.oncall is not None
        record.forwarded_to = person
        record.outcome = "forwarded"
        logger.info("Call %s forwarded to %s through %s", record.id, self.oncall.name(person),
                    trunk)

    def _say(self, node: Spoken, channel: Channel, barge_in: bool) -> str | None:
        samples = (self.prompts.file(node.file) if node.file is not None else
                   self.prompts.text(node.text) if node.text else None)
        if samples is None:
            return None
        return channel.play(samples, barge_in)


__all__ = ["FlowRunner"]
