"""Taking up a bridged call whose node died: both legs re-INVITEd from this node and
bridged again, so the caller and the person they were talking to carry on.

While a call is bridged to staff, its node saves both legs' SIP dialogs with the call's
record (`SipChannel.dialog_state`, ``{p}:dialog:{id}``): Call-ID, tags, route set,
remote target, our CSeq and SDP origin, codec, hold. When `Takeover` finds such a call
left by a dead node, `Recovery` takes it up:

1. each leg's dialog is rebuilt on this node's endpoint for its trunk (the same trunk
   names on every node), with a fresh RTP stream (`SipEndpoint.take_up_call`,
   `take_up_leg`); its CSeq and SDP version start above the saved ones;
2. both legs are re-INVITEd at once with this node's Contact and media address (an offer
   of sendrecv: a peer that holds the call answers sendonly, and stays held);
3. when both accept within `wait_s`, the call's record moves to this node (`node`,
   `run`, and an entry in `moved`) and the call's trunk handler carries on: the legs are
   bridged again, and when the person hangs up the flow goes on after the forward. The
   call's dialogs are saved again from here, so it can move once more.

If a leg cannot be taken up (its state unreadable, its trunk not on this node) or does
not accept the re-INVITE (the peer forgot the dialog: 481; no answer), the legs that are
up are hung up (a leg that answered 481 is only ended here: no BYE into a dialog its peer
has not got) and `fallback` runs: the record is closed as cut off and the caller called
back, unless the caller's own leg answered 481: that caller hung up while the node was
dead (their BYE went to it), and is not called back. A call whose caller leg is itself a
call-back (we placed it) is not taken up: it falls back too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ivr import metrics
from ivr.calls.handler import CallHandler
from ivr.records import CallRecord
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.inbound import InboundCall
from trunks.voip.leg_state import INBOUND, OUTBOUND, LegState
from trunks.voip.outbound import OutboundCall

logger = logging.getLogger(__name__)

REOFFER_WAIT_S = 8.0
"""How long both legs have to accept our re-INVITEs (retransmitted from T1 meanwhile)."""


class Recovery:
    """Takes up the bridged calls of dead nodes on this node's endpoints."""

    def __init__(self, endpoints: Mapping[str, SipEndpoint], handlers: Mapping[str, CallHandler],
                 node: str, run: str, wallclock: Callable[[], float] = time.time,
                 wait_s: float = REOFFER_WAIT_S) -> None:
        self.endpoints, self.handlers = endpoints, handlers
        self.node, self.run = node, run
        self.wait_s = wait_s
        self._wallclock = wallclock

    def __call__(self, record: CallRecord, dialog: dict[str, Any],
                 fallback: Callable[[bool], None]) -> None:
        """Take the call up (in a thread of the caller's trunk), or run `fallback`, told
        whether the caller had hung up already (it answered our re-INVITE 481: its BYE
        went to the dead node)."""
        try:
            caller_state = LegState.from_dict(dialog["caller"])
            staff_state = LegState.from_dict(dialog["staff"])
            if caller_state.kind != INBOUND or staff_state.kind != OUTBOUND:
                raise ValueError("its caller leg is a call we placed (a call-back)")
            caller_end = self._endpoint(caller_state.trunk)
            staff_end = self._endpoint(staff_state.trunk)
            handler = self.handlers[caller_state.trunk]
            staff = staff_end.take_up_leg(staff_state)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("Call %s not taken up: %s", record.id, exc)
            fallback(False)
            return
        try:
            caller_end.take_up_call(caller_state, lambda call: self._carry_on(
                call, staff, record, handler, fallback))
        except ValueError as exc:
            logger.warning("Call %s not taken up: %s", record.id, exc)
            staff.hangup()
            fallback(False)

    def _endpoint(self, trunk: str) -> SipEndpoint:
        endpoint = self.endpoints.get(trunk)
        if endpoint is None:
            raise ValueError(f"trunk {trunk} takes no calls on this node")
        return endpoint

    def _carry_on(self, call: InboundCall, staff: OutboundCall, record: CallRecord,
                  handler: CallHandler, fallback: Callable[[bool], None]) -> None:
        """The taken-up call's thread: re-offer both legs, then carry on or fall back."""
        started = time.monotonic()
        accepted = {"caller": threading.Event(), "staff": threading.Event()}
        answered = {"caller": threading.Event(), "staff": threading.Event()}

        def told(leg: str) -> Callable[[bool], None]:
            def done(ok: bool) -> None:
                if ok:
                    accepted[leg].set()
                answered[leg].set()
            return done

        call.reoffer(told("caller"))
        staff.reoffer(told("staff"))
        deadline = started + self.wait_s
        for leg in ("caller", "staff"):
            answered[leg].wait(max(0.0, deadline - time.monotonic()))
        if not all(event.is_set() for event in accepted.values()):
            lost = [leg for leg, event in accepted.items() if not event.is_set()]
            logger.warning("Call %s not taken up: the %s leg did not accept our re-INVITE",
                           record.id, " and ".join(lost))
            for peer in (staff, call):  # no BYE into a dialog the peer says it has not got
                if peer.reoffer_status == 481:
                    peer.drop("the peer has no such dialog (481)")
                else:
                    peer.hangup()
            fallback(call.reoffer_status == 481)
            return
        moved_from = record.node
        record.moved.append({"from": moved_from, "to": self.node, "at": self._wallclock(),
                             "reinvite_s": round(time.monotonic() - started, 3)})
        record.node, record.run = self.node, self.run
        metrics.call_taken_over("taken_up")
        logger.warning("Call %s from %s taken up from node %s: bridged to %s again",
                       record.id, record.caller, moved_from, record.forwarded_to)
        handler.resume(call, staff, record)


__all__ = ["REOFFER_WAIT_S", "Recovery"]
