"""What a trunk's endpoint does with each call: answer, run the flow (or the drill's
responder), keep the record, and report a cut-off.

The record is saved as the call moves (when it starts, at the answer, at each flow
step) through a `RecordWriter`, so the call never waits on Redis; at the end the handler
waits a moment for the last save (into Redis, or the spool while Redis is away). From
the answer on, the writer also follows how the call sounds (the caller's leg, and the
staff leg while bridged), and the handler writes the final figures and observes them in
/metrics when the call ends. Whether a call is a drill's is read with a bound on the
wait (`DrillService.claims`). While the call is bridged to staff, the writer saves both
legs' SIP dialogs with the record; `resume` carries on such a call when this node has
taken it up from a node that died (`ivr.calls.recovery`).

On a `register` trunk, whose carrier may fork a call to every node, the handler first
claims the call (`ivr.calls.claims`); a node that finds it claimed by another declines
its branch, and keeps no record and counts no call: the winner's record is the call's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from failover.drill.service import DrillService
from ivr import metrics
from ivr.calls.claims import DECLINE, AnswerClaims
from ivr.channels.inband_dtmf import listen_for_tones
from ivr.channels.sip import SipChannel
from ivr.flow.runner import FlowRunner
from ivr.records import CallRecord, LegQualities, RecordWriter
from speech.recognizer import VadSettings
from trunks.voip.inbound import InboundCall
from trunks.voip.outbound import OutboundCall

logger = logging.getLogger(__name__)


class CallHandler:
    """What a trunk's endpoint does with each call: answer, run the flow, keep the record."""

    def __init__(self, runner: FlowRunner, records: RecordWriter, trunk: str,
                 wallclock: Callable[[], float] = time.time,
                 vad: VadSettings | None = None, drill: DrillService | None = None,
                 on_cut_off: Callable[[InboundCall, CallRecord], None] | None = None,
                 claims: AnswerClaims | None = None) -> None:
        """`claims`: claim each call before answering it, and decline those another node
        claimed (for a trunk whose carrier forks calls to every node)."""
        self.runner, self.records, self.trunk = runner, records, trunk
        self._wallclock = wallclock
        self._vad = vad
        self.drill = drill
        self.on_cut_off = on_cut_off
        """Told of each call that ended without a goodbye, before its record is saved."""
        self.claims = claims

    def __call__(self, call: InboundCall) -> None:
        if self.claims is not None and (holder := self.claims.claim(call.id)) is not None:
            call.reject(*DECLINE)
            logger.info("Call %s from %s: answered by node %s; declined here %d", call.id,
                        call.caller, holder, DECLINE[0])
            return
        record = CallRecord(call.id, self.trunk, call.caller, call.called, call.started_at)
        self.records.update(record)
        metrics.call_started("sip")
        if call.offer.dtmf_payload_type is None:  # its keys come as tones, or as SIP INFO
            listen_for_tones(call.media)
        channel = SipChannel(call, vad=self._vad)
        try:
            call.answer()
            record.answered_at = self._wallclock()
            self._follow(call, channel)
            self.records.update(record)
            if self.drill is not None and self.drill.claims(call):
                record.visit("drill")
                record.outcome = self.drill.responder(call)
            else:
                self.runner.run(channel, record, on_step=self.records.update)
        finally:
            self._finish(call, record)

    def resume(self, call: InboundCall, leg: OutboundCall, record: CallRecord) -> None:
        """Carry on a call taken up from a node that died while it was bridged to staff
        on `leg` (both re-offered to this node): bridge them again, then go on with the
        flow after the forward, as the call would have; `record` is the call's, moved
        to this node."""
        metrics.call_started("sip")
        channel = SipChannel(call, vad=self._vad)
        channel.bridged = leg
        try:
            self._follow(call, channel)
            self.records.update(record)
            self.runner.resume(channel, leg, record, on_step=self.records.update)
        finally:
            leg.hangup()
            self._finish(call, record)

    def _follow(self, call: InboundCall, channel: SipChannel) -> None:
        self.records.follow(call.id, lambda: _live_quality(call, channel),
                            dialog=channel.dialog_state)

    def _finish(self, call: InboundCall, record: CallRecord) -> None:
        """The call is over: hang up, and save its final record."""
        call.hangup()
        record.ended_at = self._wallclock()
        record.end_reason = call.end_reason
        record.quality = call.media.quality().as_dict()
        if call.cut_off and self.on_cut_off is not None and record.path != ["drill"]:
            try:
                self.on_cut_off(call, record)
            except Exception:  # the call's record must still be saved
                logger.exception("Call %s: handling its cut-off failed", call.id)
        if not self.records.save(record):
            logger.error("Call %s: record neither stored nor spooled yet", call.id)
        metrics.call_ended("sip", record.outcome)
        metrics.call_quality(record)
        logger.info("Call %s from %s: %s via %s", call.id, call.caller, record.outcome,
                    " > ".join(record.path))


def _live_quality(call: InboundCall, channel: SipChannel) -> LegQualities:
    """How the call sounds now: the caller's leg, and the staff leg it is bridged to."""
    bridged = channel.bridged
    return (call.media.quality().as_dict(),
            None if bridged is None else channel.leg_quality(bridged))


__all__ = ["CallHandler"]
