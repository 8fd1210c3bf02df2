"""Calls from the carrier: which INVITEs a trunk accepts, and the calls it keeps.

`Answerer` takes the INVITEs the endpoint's loop hands it. An INVITE is accepted
only from the trunk's addresses (others get 403), with an SDP body (else 415) it can
answer (else 488) and a session interval it accepts (else 422); it gets 100 Trying,
and the application's `on_call` runs in a thread of its own with the `InboundCall`
(`inbound.py`). Requests and responses in a known call go to that call. `take_up`
rebuilds a call another process answered (a node that died) from its `LegState`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from trunks.voip.inbound import CallState, InboundCall
from trunks.voip.leg_state import MARGIN, LegState
from trunks.voip.media import TELEPHONE_EVENT, RtpEngine
from trunks.voip.message import (
    SDP,
    Message,
    SipParseError,
    build_response,
    parse_message,
    shorten,
    warning,
)
from trunks.voip.refusals import REFUSED, RefusalLog
from trunks.voip.sdp import MediaOffer, SdpError, SdpSession, read_offer
from trunks.voip.session_timer import MIN_SE_S, IntervalTooSmall, SessionTimer, negotiate
from trunks.voip.transport import Transport

logger = logging.getLogger(__name__)


class Answerer:
    """Answers the calls that come in on one trunk, and keeps them until they are over."""

    def __init__(self, transport: Transport, name: str, engine: RtpEngine,
                 on_call: Callable[[InboundCall], None], allowed: Iterable[str], *,
                 wallclock: Callable[[], float] = time.time,
                 media_timeout_s: float | None = None,
                 refusals: RefusalLog | None = None, symmetric_rtp: bool = True,
                 min_se_s: int = MIN_SE_S) -> None:
        """`refusals`: where INVITEs from other addresses are counted and logged;
        `symmetric_rtp`: latch each call's media to where its RTP comes from;
        `min_se_s`: the shortest session-timer interval accepted (422 below it)."""
        self.symmetric_rtp = symmetric_rtp
        self.min_se_s = min_se_s
        self.draining = False
        """While True, new calls get 503 (the front door sends them to another node);
        calls already up go on."""
        self.transport = transport
        self.refusals = refusals or RefusalLog(name, clock=transport.now)
        self.name = name
        self.engine = engine
        self.on_call = on_call
        self.allowed = frozenset(allowed)
        self.wallclock = wallclock
        self.media_timeout_s = media_timeout_s
        self._calls: dict[str, InboundCall] = {}
        self._workers: set[threading.Thread] = set()

    @property
    def calls(self) -> list[InboundCall]:
        """The calls not yet ended."""
        with self.transport.lock:
            return [c for c in self._calls.values() if c.state is not CallState.ENDED]

    def get(self, call_id: str) -> InboundCall | None:
        """The call with this id, ended ones included for a while (see `forget_ended`)."""
        return self._calls.get(call_id)

    def on_invite(self, invite: Message, source: tuple[str, int]) -> None:
        """Start a call, or answer a retransmitted INVITE or a re-INVITE in a known one."""
        call = self._calls.get(invite.call_id)
        if call is not None:
            if invite.branch != call.invite.branch:  # else a retransmission, already answered
                call.on_reinvite(invite, source)
            return
        if invite.headers["To"]["tag"]:
            self._reply(invite, source, 481, "Call/Transaction Does Not Exist")
            return
        if source[0] not in self.allowed:
            self.refusals.refused(source[0], "INVITE", "not a trunk address", "not_trunk_address")
            self._reply(invite, source, 403, "Forbidden")
            return
        if self.draining:
            REFUSED.labels(self.name, "draining").inc()
            self._reply(invite, source, 503, "Service Unavailable", [("Retry-After", "30")])
            return
        if invite.content and invite.content_type != SDP:
            REFUSED.labels(self.name, "unsupported_media").inc()
            self._reply(invite, source, 415, "Unsupported Media Type", [("Accept", SDP)])
            return
        try:
            offer = read_offer(invite)
        except SdpError as exc:
            REFUSED.labels(self.name, "unsupported_media").inc()
            logger.info("SIP endpoint %s: 488 for call %s: %s", self.name, shorten(invite.call_id),
                        shorten(str(exc)))
            self._reply(invite, source, 488, "Not Acceptable Here", [warning(str(exc))])
            return
        try:
            timer = negotiate(invite, self.min_se_s)
        except IntervalTooSmall as exc:
            self._reply(invite, source, 422, "Session Interval Too Small",
                        [("Min-SE", str(exc.min_se))])
            return
        except ValueError as exc:
            logger.info("SIP endpoint %s: 400 for call %s: %s", self.name,
                        shorten(invite.call_id), shorten(str(exc)))
            self._reply(invite, source, 400, "Bad Request")
            return
        self._reply(invite, source, 100, "Trying")
        self._start(invite, source, offer, timer)

    def take_up(self, state: LegState, on_call: Callable[[InboundCall], None]) -> InboundCall:
        """Rebuild an answered call that another process carried from its `state`: in
        its dialog, with a stream of ours (sending nowhere until the caller answers our
        `reoffer`); `on_call` runs it in a thread of its own, as new calls run. Raise
        ValueError if the state cannot be read, or the call is up here already."""
        try:
            invite = parse_message(state.invite.encode("utf-8"))
            offer = read_offer(invite)
        except (SipParseError, SdpError) as exc:
            raise ValueError(f"call {state.call_id}: its INVITE cannot be read: {exc}") from exc
        media = self.engine.open(state.payload_type,
                                 dtmf_payload_type=state.dtmf_payload_type or TELEPHONE_EVENT,
                                 latching=self.symmetric_rtp)
        now = self.wallclock()
        call = InboundCall(self.transport, invite, state.source, offer, media, now,
                           self.media_timeout_s, self.wallclock, local_tag=state.local_tag,
                           state=CallState.ANSWERED, answered_at=now, on_hold=state.on_hold,
                           sdp=SdpSession(state.sdp_id, state.sdp_version + MARGIN),
                           min_se_s=self.min_se_s, trunk=self.name)
        call._cseq = state.cseq + MARGIN
        media.sending = not state.on_hold
        with self.transport.lock:
            if call.id in self._calls:
                media.close()
                raise ValueError(f"call {state.call_id} is up here already")
            self._calls[call.id] = call
            call.watch_media()
        logger.info("Call %s from %s taken up on %s", shorten(call.id), shorten(call.caller),
                    self.name)
        self._run(call, on_call)
        return call

    def end_calls(self, timeout: float = 5.0) -> None:
        """Hang up every call and wait (up to `timeout`) for its worker to finish."""
        for call in self.calls:
            call.hangup()
        deadline = self.transport.now() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - self.transport.now()))

    def forget_ended(self, now: float, linger_s: float) -> None:
        """Drop the calls that ended more than `linger_s` ago."""
        for call_id, ended in [(i, c.ended_at) for i, c in self._calls.items()]:
            if ended is not None and now - ended > linger_s:
                del self._calls[call_id]

    def on_response(self, response: Message) -> bool:
        """A response to a request of ours in one of the calls; False if not for one.
        A call the hotline placed to itself (a drill) has the same Call-ID on both sides:
        the From tag says which side a response is for."""
        call = self._calls.get(response.call_id)
        if call is None or response.cseq.method not in ("INVITE", "UPDATE") \
                or response.headers["From"]["tag"] != call.local_tag:
            return False
        call.on_response(response)
        return True

    def _start(self, invite: Message, source: tuple[str, int], offer: MediaOffer,
               timer: SessionTimer | None) -> None:
        media = self.engine.open(offer.payload_type, remote=(offer.address, offer.port),
                                 dtmf_payload_type=offer.dtmf_payload_type or TELEPHONE_EVENT,
                                 latching=self.symmetric_rtp)
        media.rtcp.mux = offer.rtcp_mux
        call = InboundCall(self.transport, invite, source, offer, media, self.wallclock(),
                           self.media_timeout_s, self.wallclock, timer=timer,
                           min_se_s=self.min_se_s, trunk=self.name)
        call._hold(offer)  # an offer may start on hold; it names the RTCP port too
        self._calls[call.id] = call
        logger.info("Call %s from %s to %s on %s", shorten(call.id), shorten(call.caller),
                    shorten(call.called), self.name)
        self._run(call, self.on_call)

    def _run(self, call: InboundCall, on_call: Callable[[InboundCall], None]) -> None:
        worker = threading.Thread(target=self._run_call, args=(call, on_call),
                                  name=f"call-{call.id[:8]}", daemon=True)
        self._workers.add(worker)
        worker.start()

    def _run_call(self, call: InboundCall, on_call: Callable[[InboundCall], None]) -> None:
        try:
            on_call(call)
        except Exception:
            logger.exception("Call %s: the flow failed; hanging up", shorten(call.id))
        finally:
            call.hangup()
            self._workers.discard(threading.current_thread())

    def _reply(self, request: Message, source: tuple[str, int], code: int, reason: str,
               headers: list[tuple[str, str]] | None = None) -> None:
        self.transport.send(build_response(request, code, reason, headers), source)
