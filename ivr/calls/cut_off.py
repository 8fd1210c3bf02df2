"""Calling back callers a failure cut off (see `failover.callbacks` for the policy).

`CallbackService.cut_off` runs as a call cut off by a trunk failure ends, and
`node_failed` as another node closes a call that a dead node left open: each keeps the
call-back record, or opens a ticket for staff right away. The service's thread claims
call-backs as they fall due (and those whose node died while calling), renews its claims
while it calls, calls each number through the healthiest trunk (the next one if a
set-up fails on a trunk), and runs the flow from `callback.node` on the answered call.
A call-back nobody answers becomes a ticket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from failover.callbacks import NODE, CallbackRecord, Callbacks, callback_id
from failover.config import CallbackSettings
from failover.router import Need, Router
from ivr import metrics
from ivr.channels.sip import SipChannel
from ivr.flow.runner import FlowRunner
from ivr.records import CallRecord, RecordWriter
from ivr.tickets import TicketDesk
from trunks.health import HealthSnapshot
from trunks.voip.inbound import InboundCall
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

POLL_S = 1.0
"""How often due call-backs are looked for."""


class CallbackService:
    def __init__(self, callbacks: Callbacks, settings: CallbackSettings, router: Router,
                 runner: FlowRunner, records: RecordWriter, desk: TicketDesk,
                 health: Callable[[], dict[str, HealthSnapshot]],
                 wallclock: Callable[[], float] = time.time) -> None:
        self.callbacks, self.settings = callbacks, settings
        self.router, self.runner, self.records, self.desk = router, runner, records, desk
        self.health = health
        self._wallclock = wallclock
        self._stop = threading.Event()
        self._workers: set[threading.Thread] = set()
        self._legs: dict[str, OutboundCall] = {}
        self._claimed: set[str] = set()
        """The call-backs this node works on, whose claims it renews."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, hang up call-backs in progress and wait for their records."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            workers, legs = list(self._workers), list(self._legs.values())
        for leg in legs:
            leg.hangup()
        for worker in workers:
            worker.join(timeout)

    def cut_off(self, call: InboundCall, record: CallRecord) -> None:
        """The call ended without a goodbye: keep a call-back, or open a ticket now."""
        snapshot = self.health().get(record.trunk)
        self._keep(CallbackRecord(
            callback_id(call.id), call.id, call.caller, record.trunk, list(record.path),
            call.end_reason or "cut off", self._wallclock(),
            None if snapshot is None else snapshot.state.value), record)

    def node_failed(self, record: CallRecord) -> None:
        """The node that carried `record`'s call died with it up (the record is being
        closed): keep a call-back, or open a ticket now."""
        self._keep(CallbackRecord(
            callback_id(record.id), record.id, record.caller, record.trunk, list(record.path),
            record.end_reason or "cut off", self._wallclock(), cause=NODE), record)

    def _keep(self, callback: CallbackRecord, record: CallRecord) -> None:
        """Keep `callback` (or find the call's own, made before), or open its ticket; say
        which in `record.callback`."""
        try:
            callback = self.callbacks.cut_off(callback)
        except redis.RedisError as exc:
            callback.status, callback.why = "ticket", f"Redis unreachable ({exc})"
        if callback.status in ("ticket", "failed"):
            if callback.ticket is None:
                self._ticket(callback)
            record.callback = f"ticket {callback.ticket}: {callback.why}"
        elif callback.status == "pending":
            record.callback = f"call-back {callback.id} in {self.settings.delay_s:g} s"
        else:
            record.callback = f"call-back {callback.id} ({callback.status})"
        cause = ("its node failed" if callback.cause == NODE
                 else f"trunk {record.trunk} {callback.trunk_state or '?'}")
        logger.warning("Call %s from %s was cut off at %s (%s, %s): %s", record.id,
                       record.caller, record.path[-1] if record.path else "the start",
                       callback.reason, cause, record.callback)

    def _run(self) -> None:
        unreachable = False
        while not self._stop.wait(POLL_S):
            with self._lock:
                working = list(self._claimed)
            try:
                self.callbacks.renew(working)
                due = [c for c in self.callbacks.claim_due() if c.id not in working]
            except redis.RedisError as exc:
                if not unreachable:  # once per outage
                    logger.warning("Call-backs: Redis unreachable, none placed until it "
                                   "answers: %s", exc)
                unreachable = True
                continue
            if unreachable:
                logger.info("Call-backs: Redis answers again")
                unreachable = False
            for callback in due:
                worker = threading.Thread(target=self._call_back, args=(callback,),
                                          name=f"callback-{callback.id}", daemon=True)
                with self._lock:
                    self._workers = {w for w in self._workers if w.is_alive()} | {worker}
                    self._claimed.add(callback.id)
                worker.start()

    def _call_back(self, callback: CallbackRecord) -> None:
        try:
            self._place(callback)
        finally:
            with self._lock:
                self._claimed.discard(callback.id)

    def _place(self, callback: CallbackRecord) -> None:
        if callback.status == "calling":
            logger.warning("Call-back %s: its node stopped calling (%d attempts); calling "
                           "again", callback.id, len(callback.attempts))
        callback.status = "calling"
        self._save(callback)
        tried: set[str] = set()
        try:
            while not self._stop.is_set():
                placed = self.router.dial(callback.number, self.settings.ring_s,
                                          frozenset(tried), Need.CALLBACK)
                if placed is None:
                    callback.why = "no usable trunk" + (" left" if tried else "")
                    break
                trunk, leg = placed
                tried.add(trunk)
                outcome = Outcome.PENDING
                deadline = time.monotonic() + self.settings.ring_s + 5
                while outcome is Outcome.PENDING and time.monotonic() < deadline \
                        and not self._stop.is_set():
                    outcome = leg.wait(0.2)
                callback.attempts.append({"trunk": trunk, "outcome": str(outcome),
                                          "status": leg.status, "reason": leg.reason})
                if outcome is Outcome.ANSWERED:
                    callback.status, callback.callback_call = "answered", leg.call_id
                    self._save(callback)
                    self._run_flow(callback, trunk, leg)
                    return
                if outcome is Outcome.PENDING:
                    leg.cancel()
                    if self._stop.is_set():  # shutting down: another node, or a restart
                        callback.status, callback.due_at = "pending", self._wallclock()
                        callback.attempts.pop()
                        self._save(callback)
                        return
                if outcome is not Outcome.TRUNK_FAILED:
                    callback.why = f"not answered ({outcome}: {leg.reason or leg.status})"
                    break
        except Exception as exc:  # a ticket, not a forgotten caller
            logger.exception("Call-back %s failed", callback.id)
            callback.why = f"{type(exc).__name__}: {exc}"
        callback.status = "failed"
        self._ticket(callback)

    def _run_flow(self, callback: CallbackRecord, trunk: str, leg: OutboundCall) -> None:
        with self._lock:
            self._legs[leg.call_id] = leg
        record = CallRecord(leg.call_id, trunk, callback.number, callback.number,
                            self._wallclock(), answered_at=self._wallclock(),
                            callback_of=callback.call_id)
        self.records.update(record)
        metrics.call_started("callback")
        try:
            self.runner.run(SipChannel(leg), record, start=self.settings.node,
                            on_step=self.records.update)
        finally:
            leg.hangup()
            with self._lock:
                self._legs.pop(leg.call_id, None)
            record.ended_at, record.end_reason = self._wallclock(), leg.end_reason
            record.quality = leg.media.quality().as_dict()
            if not self.records.save(record):
                logger.error("Call-back %s: record not stored or spooled yet", callback.id)
            metrics.call_ended("callback", record.outcome)
            metrics.call_quality(record)
            logger.info("Call-back %s to %s: %s via %s", callback.id, callback.number,
                        record.outcome, " > ".join(record.path))

    def _ticket(self, callback: CallbackRecord) -> None:
        where = callback.path[-1] if callback.path else "the start"
        try:
            ticket = self.desk.open(
                caller=callback.number, call_id=callback.call_id, trunk=callback.trunk,
                reason=f"call cut off at {where} ({callback.reason}); call the caller back: "
                       f"{callback.why}", category="cut-off call")
            callback.ticket = ticket.id
            callback.status = "ticket" if callback.status != "failed" else "failed"
        except Exception as exc:  # TicketNotSaved: the desk has logged it in full
            logger.error("Call-back %s: no ticket either: %s", callback.id, exc)
        self._save(callback)

    def _save(self, callback: CallbackRecord) -> None:
        try:
            self.callbacks.save(callback)
        except redis.RedisError as exc:
            logger.error("Call-back %s not saved (Redis unreachable): %s", callback.id, exc)


__all__ = ["CallbackService"]
