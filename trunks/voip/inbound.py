"""Calls from the carrier: the UAS side of RFC 3261 for one trunk.

`Answerer` takes the INVITEs the endpoint's loop hands it. An INVITE is accepted
only from the trunk's addresses (others get 403); it gets 100 Trying, and the
application's `on_call` runs in a thread of its own with the `InboundCall`. That
thread decides the answer through the call's methods (`ring`, `answer`, `reject`,
`hangup`), which are safe to use from it:

- a 200 is retransmitted from T1 doubling to T2 until its ACK arrives, and the
  call is hung up with BYE (cut off) if none comes within 64 * T1;
- CANCEL gets 200 and the pending INVITE 487; BYE gets 200; a re-INVITE (hold,
  unhold) gets 200 with our SDP; CANCEL or BYE outside a known dialog gets 481;
- an answered call from which no audio or DTMF arrives for `media_timeout_s`, while
  not on hold, is ended with BYE as cut off (the media watchdog).

Every response goes back to the address the request came from.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from trunks.voip.media import TELEPHONE_EVENT, RtpEngine, RtpStream
from trunks.voip.message import (
    ALLOW,
    SDP,
    SIP_VERSION,
    USER_AGENT,
    Message,
    SipParseError,
    build_response,
    format_message,
    new_branch,
    new_tag,
    shorten,
    uri_address,
    uris,
    via,
)
from trunks.voip.refusals import REFUSED, RefusalLog
from trunks.voip.sdp import MediaOffer, SdpError, SdpSession, read_offer
from trunks.voip.transport import Transport

logger = logging.getLogger(__name__)

CUT_OFF = "cut off"
"""How the end reason of a call that ended without a goodbye begins."""
MEDIA_CHECK_S = 1.0
"""How often the media watchdog looks at each answered call."""


class CallState(enum.StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass
class InboundCall:
    """A call from the carrier; `ring`, `answer`, `reject` and `hangup` are for the call's
    worker thread, the `on_*` methods for the endpoint's loop."""

    transport: Transport
    invite: Message
    source: tuple[str, int]
    offer: MediaOffer
    media: RtpStream
    started_at: float
    media_timeout_s: float | None = None
    wallclock: Callable[[], float] = time.time
    local_tag: str = field(default_factory=new_tag)
    state: CallState = CallState.RINGING
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    on_hold: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    sdp: SdpSession = field(default_factory=SdpSession)
    """Our SDP for this call: one origin, versioned across the answer and re-INVITEs."""
    _cseq: int = 0

    @property
    def id(self) -> str:
        return self.invite.call_id

    @property
    def caller(self) -> str:
        return str(self.invite.headers["From"].get("number") or
                   self.invite.headers["From"]["address"])

    @property
    def called(self) -> str:
        return str(self.invite.headers["To"].get("number") or self.invite.headers["To"]["address"])

    @property
    def cut_off(self) -> bool:
        """Whether the call ended without a goodbye from either side: its audio stopped,
        or the caller never acknowledged our answer (a path that failed)."""
        return bool(self.end_reason) and (self.end_reason or "").startswith(CUT_OFF)

    def ring(self) -> None:
        """Send 180 Ringing."""
        self._respond(180, "Ringing")

    def answer(self) -> None:
        """Send 200 OK with our SDP; it is retransmitted until the caller's ACK."""
        body = self.sdp.describe(self.media.local_address, [self.offer.payload_type],
                                 self.offer.dtmf_payload_type, self.offer.answer_direction)
        transport = self.transport
        with transport.lock:
            data = self._respond(200, "OK", self._dialog_headers(), body)
            if not data:
                return
            self.state, self.answered_at = CallState.ANSWERED, self.wallclock()
            transport.retransmit((self.id, "invite"), data, self.source,
                                 on_give_up=self._no_ack)
            if self.media_timeout_s is not None:
                self.media.last_heard = time.monotonic()
                transport.schedule((self.id, "media"), MEDIA_CHECK_S, self._check_media)

    def reject(self, code: int = 486, reason: str = "Busy Here") -> None:
        """Refuse a call that is still ringing."""
        with self.transport.lock:
            data = self._respond(code, reason)
            if data:
                self.transport.retransmit((self.id, "invite"), data, self.source)
                self._end(f"rejected {code} {reason}")

    def hangup(self) -> None:
        """End the call: BYE if answered, 480 if still ringing, nothing if ended."""
        with self.transport.lock:
            if self.state is CallState.RINGING:
                self.reject(480, "Temporarily Unavailable")
            elif self.state is CallState.ANSWERED:
                self._send_bye()
                self._end("hung up by hotline")

    def wait_ended(self, timeout: float | None = None) -> bool:
        return self.ended.wait(timeout)

    # Requests in the call's dialog, from the endpoint's loop.

    def on_ack(self) -> None:
        self.transport.stop_retransmit((self.id, "invite"))

    def on_reinvite(self, invite: Message, source: tuple[str, int]) -> None:
        """Answer a re-INVITE (hold or unhold) with our SDP, or 488."""
        try:
            offer = read_offer(invite)
        except SdpError:
            self._reply(invite, source, 488, "Not Acceptable Here", to_tag=self.local_tag)
            return
        self._hold(offer.on_hold)
        if offer.address not in ("0.0.0.0", "::"):
            self.media.retarget((offer.address, offer.port))
        body = self.sdp.describe(self.media.local_address, [self.offer.payload_type],
                                 self.offer.dtmf_payload_type, offer.answer_direction)
        data = self._reply(invite, source, 200, "OK", self._dialog_headers(), body,
                           to_tag=self.local_tag)
        self.transport.retransmit((self.id, "invite"), data, source)

    def on_cancel(self, cancel: Message, source: tuple[str, int]) -> None:
        if cancel.branch != self.invite.branch:
            self._reply(cancel, source, 481, "Call/Transaction Does Not Exist")
            return
        self._reply(cancel, source, 200, "OK")
        if self.state is CallState.RINGING:
            data = self._reply(self.invite, self.source, 487, "Request Terminated",
                               to_tag=self.local_tag)
            self.transport.retransmit((self.id, "invite"), data, self.source)
            self._end("cancelled by caller")

    def on_bye(self, bye: Message, source: tuple[str, int]) -> None:
        if bye.headers["To"]["tag"] != self.local_tag:
            self._reply(bye, source, 481, "Call/Transaction Does Not Exist")
            return
        self._reply(bye, source, 200, "OK")
        self.transport.stop_retransmit((self.id, "invite"))
        self._end("caller hung up")

    # Private: hold, responses, BYE, timers.

    def _hold(self, on_hold: bool) -> None:
        """Hold or resume: nothing is sent while held (RFC 3264 6.1); the call's flow
        sees `on_hold` and waits."""
        if on_hold != self.on_hold:
            logger.info("Call %s %s", shorten(self.id), "held" if on_hold else "resumed")
        self.on_hold = on_hold
        self.media.sending = not on_hold

    def _respond(self, code: int, reason: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"") -> bytes:
        """Respond to the call's INVITE while it rings; return what was sent (b"" if not)."""
        with self.transport.lock:
            if self.state is not CallState.RINGING:
                return b""
            return self._reply(self.invite, self.source, code, reason, headers or [], body,
                               to_tag=self.local_tag)

    def _reply(self, request: Message, source: tuple[str, int], code: int, reason: str,
               headers: list[tuple[str, str]] | None = None, body: bytes = b"",
               to_tag: str | None = None) -> bytes:
        data = build_response(request, code, reason, headers, body, to_tag)
        self.transport.send(data, source)
        return data

    def _dialog_headers(self) -> list[tuple[str, str]]:
        host, port = self.transport.address
        return [*(("Record-Route", rr) for rr in self.invite.values("Record-Route")),
                ("Contact", f"<sip:hotline@{host}:{port}>"), ("Allow", ALLOW),
                ("Content-Type", "application/sdp")]

    def _no_ack(self) -> None:
        logger.warning("Call %s: no ACK for our 200 within %g s", shorten(self.id),
                       self.transport.transaction_timeout_s)
        with self.transport.lock:
            if self.state is CallState.ANSWERED:
                self._send_bye()
                self._end(f"{CUT_OFF}: no ACK from the caller")

    def _check_media(self) -> None:
        """The media watchdog's tick (endpoint thread): end a call gone silent."""
        timeout = self.media_timeout_s
        assert timeout is not None
        with self.transport.lock:
            if self.state is not CallState.ANSWERED:
                return
            silent_s = time.monotonic() - self.media.last_heard
            if self.on_hold or silent_s < timeout:
                self.transport.schedule((self.id, "media"), MEDIA_CHECK_S, self._check_media)
                return
            logger.warning("Call %s: nothing from the caller for %.1f s; ending it as cut off",
                           shorten(self.id), silent_s)
            self._send_bye()  # in case only the media path died
            self._end(f"{CUT_OFF}: no audio from the caller for {timeout:g} s")

    def _send_bye(self) -> None:
        """BYE along the caller's route set; stop retransmitting our 200."""
        self._cseq += 1
        route = uris(", ".join(self.invite.values("Record-Route")))
        contact = uris(self.invite.value("Contact") or "")
        target = contact[0] if contact else f"sip:{self.source[0]}:{self.source[1]}"
        to = self.invite.value("To") or ""
        data = format_message(f"BYE {target} {SIP_VERSION}", [
            ("Via", via(self.transport.address, new_branch())), ("Max-Forwards", "70"),
            *([("Route", ", ".join(f"<{r}>" for r in route))] if route else []),
            ("From", f"{to};tag={self.local_tag}" if ";tag=" not in to else to),
            ("To", self.invite.value("From") or ""), ("Call-ID", self.id),
            ("CSeq", f"{self._cseq} BYE"), ("User-Agent", USER_AGENT)])
        try:
            destination = uri_address(route[0] if route else target)
        except SipParseError:
            destination = self.source
        self.transport.transmit((self.id, "bye"), data, destination)
        self.transport.stop_retransmit((self.id, "invite"))

    def _end(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state, self.end_reason = CallState.ENDED, reason
        self.ended_at = self.transport.now()
        self.media.close()
        self.ended.set()
        logger.info("Call %s ended: %s", shorten(self.id), reason)


class Answerer:
    """Answers the calls that come in on one trunk, and keeps them until they are over."""

    def __init__(self, transport: Transport, name: str, engine: RtpEngine,
                 on_call: Callable[[InboundCall], None], allowed: Iterable[str], *,
                 wallclock: Callable[[], float] = time.time,
                 media_timeout_s: float | None = None,
                 refusals: RefusalLog | None = None, symmetric_rtp: bool = True) -> None:
        """`refusals`: where INVITEs from other addresses are counted and logged;
        `symmetric_rtp`: latch each call's media to where its RTP comes from."""
        self.symmetric_rtp = symmetric_rtp
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
            self._reply(invite, source, 488, "Not Acceptable Here")
            return
        self._reply(invite, source, 100, "Trying")
        self._start(invite, source, offer)

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

    def _start(self, invite: Message, source: tuple[str, int], offer: MediaOffer) -> None:
        media = self.engine.open(offer.payload_type, remote=(offer.address, offer.port),
                                 dtmf_payload_type=offer.dtmf_payload_type or TELEPHONE_EVENT,
                                 latching=self.symmetric_rtp)
        call = InboundCall(self.transport, invite, source, offer, media, self.wallclock(),
                           self.media_timeout_s, self.wallclock)
        call._hold(offer.on_hold)  # an offer may start on hold
        self._calls[call.id] = call
        logger.info("Call %s from %s to %s on %s", shorten(call.id), shorten(call.caller),
                    shorten(call.called), self.name)
        worker = threading.Thread(target=self._run_call, args=(call,),
                                  name=f"call-{call.id[:8]}", daemon=True)
        self._workers.add(worker)
        worker.start()

    def _run_call(self, call: InboundCall) -> None:
        try:
            self.on_call(call)
        except Exception:
            logger.exception("Call %s: the flow failed; hanging up", shorten(call.id))
        finally:
            call.hangup()
            self._workers.discard(threading.current_thread())

    def _reply(self, request: Message, source: tuple[str, int], code: int, reason: str,
               headers: list[tuple[str, str]] | None = None) -> None:
        self.transport.send(build_response(request, code, reason, headers), source)
