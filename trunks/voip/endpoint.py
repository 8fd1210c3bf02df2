"""A trunk's SIP endpoint: one UDP port that answers calls from the carrier.

Stock pyVoIP's phone answers no OPTIONS, never sends 487 after CANCEL, builds
ACKs and BYEs with the wrong tags, sends everything to one configured server,
and accepts INVITEs from anyone. This endpoint keeps pyVoIP for parsing and
does the UAS side of RFC 3261 itself:

- OPTIONS gets 200 with Allow and Accept, in or out of a dialog;
- INVITE is accepted only from the trunk's addresses (others get 403), gets
  100 Trying, then whatever the call's worker decides (180, 200 with SDP,
  or a failure). A 200 is retransmitted from T1 doubling to T2 until its ACK
  arrives, and the call is hung up if none comes within 32 s;
- CANCEL gets 200, and the pending INVITE 487; BYE gets 200; a re-INVITE
  (hold, unhold) gets 200 with our SDP; requests in unknown dialogs get 481;
- every response goes back to the address the request came from.

Each call runs the application's `on_call` in a thread of its own; the calls'
methods (`ring`, `answer`, `reject`, `hangup`) are safe from that thread.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from trunks.voip.media import TELEPHONE_EVENT, RtpEngine, RtpStream
from trunks.voip.message import (
    ALLOW,
    SIP_VERSION,
    Message,
    SipParseError,
    format_message,
    new_branch,
    new_tag,
    parse_message,
    uri_address,
    uris,
    via,
)
from trunks.voip.outbound import (
    PROVISIONAL_TIMEOUT_S,
    TRUNK_FAILURE_STATUSES,
    OutboundCall,
    Outcome,
    build_invite,
    digest_authorization,
    in_dialog_request,
    in_transaction_request,
    learn_dialog,
    take_media,
)
from trunks.voip.registration import (
    REFRESH_FRACTION,
    REGISTER_EXPIRES_S,
    RETRY_S,
    Registration,
    RegistrationState,
    granted_expires,
    min_expires,
)
from trunks.voip.sdp import MediaOffer, SdpError, build_sdp, read_offer
from trunks.waker import Waker, stop_loop

logger = logging.getLogger(__name__)

T1_S = 0.5
"""RFC 3261 round-trip estimate: first retransmission interval."""
T2_S = 4.0
"""RFC 3261 cap on the retransmission interval."""
TRANSACTION_TIMEOUT_T1 = 64
"""Give up on an unacknowledged 200 or unanswered BYE after 64 * T1 (Timer H/B)."""
LINGER_S = 32.0
"""Ended calls are remembered this long, to answer retransmitted requests and responses."""
USER_AGENT = "hotline"
CUT_OFF = "cut off"
"""How the end reason of a call that ended without a goodbye begins."""
IP_RECVERR, IPV6_RECVERR = 11, 25
"""Linux socket options (<linux/in.h>, <linux/in6.h>) that Python's socket module lacks."""
_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""struct sock_extended_err: errno, origin, ICMP type and code, pad, info, data."""
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
MEDIA_CHECK_S = 1.0
"""How often the media watchdog looks at each answered call."""


class CallState(enum.StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass
class _Retransmit:
    data: bytes
    destination: tuple[str, int]
    next_at: float
    interval: float
    give_up_at: float
    on_give_up: Callable[[], None] | None = None


@dataclass
class InboundCall:
    """A call from the carrier; its methods are for the call's worker thread."""

    endpoint: SipEndpoint
    invite: Message
    source: tuple[str, int]
    offer: MediaOffer
    media: RtpStream
    started_at: float
    local_tag: str = field(default_factory=new_tag)
    state: CallState = CallState.RINGING
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    on_hold: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
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

    def ring(self) -> None:
        """Send 180 Ringing."""
        self.endpoint._respond_invite(self, 180, "Ringing")

    def answer(self) -> None:
        """Send 200 OK with our SDP; it is retransmitted until the caller's ACK."""
        self.endpoint._answer(self)

    def reject(self, code: int = 486, reason: str = "Busy Here") -> None:
        """Refuse a call that is still ringing."""
        self.endpoint._reject(self, code, reason)

    def hangup(self) -> None:
        """End the call: BYE if answered, 480 if still ringing, nothing if ended."""
        self.endpoint._hangup(self)

    def wait_ended(self, timeout: float | None = None) -> bool:
        return self.ended.wait(timeout)

    @property
    def cut_off(self) -> bool:
        """Whether the call ended without a goodbye from either side: its audio stopped,
        or the caller never acknowledged our answer (a path that failed)."""
        return bool(self.end_reason) and (self.end_reason or "").startswith(CUT_OFF)


class SipEndpoint:
    """The SIP side of one trunk, on one UDP port."""

    def __init__(self, name: str, bind: tuple[str, int], engine: RtpEngine,
                 on_call: Callable[[InboundCall], None], allowed: Iterable[str], *,
                 proxy: tuple[str, int] | None = None, domain: str | None = None,
                 credentials: tuple[str, str] | None = None, caller_id: str = "hotline",
                 on_trunk_failure: Callable[[str], None] | None = None,
                 provisional_timeout_s: float = PROVISIONAL_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time, t1_s: float = T1_S,
                 linger_s: float = LINGER_S, media_timeout_s: float | None = None) -> None:
        """`media_timeout_s`: an answered call from which nothing (audio or DTMF) arrives
        for this long, while not on hold, is ended as cut off; None: never."""
        self.name = name
        self.media_timeout_s = media_timeout_s
        self.linger_s = linger_s
        self.proxy = proxy
        self.domain = domain or (proxy[0] if proxy else None)
        self.credentials = credentials
        self.caller_id = caller_id
        self.on_trunk_failure = on_trunk_failure
        self.provisional_timeout_s = provisional_timeout_s
        self.t1_s = t1_s
        self.t2_s = T2_S * t1_s / T1_S
        self.transaction_timeout_s = TRANSACTION_TIMEOUT_T1 * t1_s
        self.engine = engine
        self.on_call = on_call
        self.allowed = frozenset(allowed)
        self.ignored = 0
        self._clock, self._wallclock = clock, wallclock
        self._sock = socket.socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET,
                                   socket.SOCK_DGRAM)
        self._sock.bind(bind)
        self._sock.setblocking(False)
        # An unconnected UDP socket is not told of ICMP errors unless it asks (Linux): with
        # this, an INVITE to a carrier whose port is closed fails at once, not after 1 s.
        with contextlib.suppress(OSError):
            if self._sock.family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                self._sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self._calls: dict[str, InboundCall] = {}
        self._outbound: dict[str, OutboundCall] = {}
        self._workers: set[threading.Thread] = set()
        self._retransmits: dict[tuple[str, str], _Retransmit] = {}
        self._timers: dict[tuple[str, str], tuple[float, Callable[[], None]]] = {}
        self.registration: Registration | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=f"sip-{name}", daemon=True)

    @property
    def calls(self) -> list[InboundCall]:
        with self._lock:
            return [c for c in self._calls.values() if c.state is not CallState.ENDED]

    def start(self) -> None:
        self._thread.start()
        logger.info("SIP endpoint %s listening on %s:%d", self.name, *self.address)

    def end_calls(self, timeout: float = 5.0) -> None:
        """Hang up every incoming call and wait (up to `timeout`) for its worker to finish,
        so the call's record is complete."""
        for call in self.calls:
            call.hangup()
        deadline = self._clock() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - self._clock()))

    def stop(self, timeout: float = 5.0) -> None:
        """Hang up every call, then stop."""
        self.end_calls(timeout)
        with self._lock:
            outbound = list(self._outbound.values())
        for out in outbound:
            out.hangup()
        self.unregister()
        if not stop_loop(self._stopping, self._waker, self._thread, timeout):
            return
        self._sock.close()
        self._waker.close()

    # The receive loop.

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._waker.reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                try:
                    self._step(selector)
                except Exception:  # one bad message must not stop the trunk's calls
                    logger.exception("SIP endpoint %s failed a step; continuing", self.name)

    def _step(self, selector: selectors.BaseSelector) -> None:
        with self._lock:
            deadline = min([r.next_at for r in self._retransmits.values()] +
                           [at for at, _ in self._timers.values()], default=None)
        timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - self._clock()))
        for key, _ in selector.select(timeout):
            if key.fileobj is self._waker.reader:
                self._waker.drain()
            else:
                self._read()
        self._fire_timers()

    def _read(self) -> None:
        while True:
            try:
                data, source = self._sock.recvfrom(65535)
            except BlockingIOError:  # nothing more to read now
                self._read_errors()
                return
            except OSError:  # an ICMP error for something we sent: see which
                self._read_errors()
                continue
            try:
                message = parse_message(data)
            except SipParseError as exc:
                self.ignored += 1
                logger.debug("SIP endpoint %s ignored a datagram from %s: %s", self.name,
                             source, exc)
                continue
            with self._lock:
                if message.is_response:
                    self._on_response(message)
                else:
                    self._on_request(message, source[:2])

    def _read_errors(self) -> None:
        """Fail at once the outgoing INVITEs that an ICMP error (port or host unreachable)
        came back for; the error queue holds the datagram that caused each."""
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65535, 1024, socket.MSG_ERRQUEUE)
            except OSError:
                return
            errors = [_EXTENDED_ERR.unpack_from(payload)[0] for _, kind, payload in ancillary
                      if kind in (IP_RECVERR, IPV6_RECVERR) and len(payload) >= _EXTENDED_ERR.size]
            # An ICMP error quotes only the start of the datagram: read the Call-ID.
            call_id = _CALL_ID.search(data) if data.startswith(b"INVITE ") else None
            if not errors or call_id is None:
                continue
            with self._lock:
                call = self._outbound.get(call_id[1].decode(errors="replace"))
                if call is None or call.outcome is not Outcome.PENDING or call.provisional:
                    continue
                self._retransmits.pop((call.call_id, "out-invite"), None)
                for kind in ("provisional", "ring"):
                    self._timers.pop((call.call_id, kind), None)
                self._end_outbound(call, Outcome.TRUNK_FAILED, None,
                                   f"ICMP: {os.strerror(errors[0]).lower()}")

    def _fire_timers(self) -> None:
        now = self._clock()
        give_ups = []
        with self._lock:
            for key, retransmit in list(self._retransmits.items()):
                if now >= retransmit.give_up_at:
                    del self._retransmits[key]
                    if retransmit.on_give_up is not None:
                        give_ups.append(retransmit.on_give_up)
                elif now >= retransmit.next_at:
                    self._send(retransmit.data, retransmit.destination)
                    retransmit.interval = min(retransmit.interval * 2, self.t2_s)
                    retransmit.next_at = now + retransmit.interval
            for key, (at, callback) in list(self._timers.items()):
                if now >= at:
                    del self._timers[key]
                    give_ups.append(callback)
            for calls in (self._calls, self._outbound):
                for call_id, ended in [(i, c.ended_at) for i, c in calls.items()]:
                    if ended is not None and now - ended > self.linger_s:
                        del calls[call_id]
        for give_up in give_ups:
            give_up()

    # Requests from the carrier.

    def _on_request(self, request: Message, source: tuple[str, int]) -> None:
        method = request.method
        call = self._calls.get(request.call_id)
        if method == "OPTIONS":
            self._reply(request, source, 200, "OK", [("Allow", ALLOW),
                                                    ("Accept", "application/sdp")])
        elif method == "INVITE":
            self._on_invite(request, source, call)
        elif method == "ACK":
            if call is not None:
                self._retransmits.pop((call.id, "invite"), None)
        elif method == "CANCEL":
            self._on_cancel(request, source, call)
        elif method == "BYE":
            self._on_bye(request, source, call)
        elif call is None and request.headers["To"]["tag"]:
            self._reply(request, source, 481, "Call/Transaction Does Not Exist")
        else:
            self._reply(request, source, 501, "Not Implemented", [("Allow", ALLOW)])

    def _on_invite(self, invite: Message, source: tuple[str, int],
                   call: InboundCall | None) -> None:
        if call is not None:
            if invite.branch == call.invite.branch:
                return  # a retransmission; our last response is being retransmitted anyway
            self._on_reinvite(invite, source, call)
            return
        if invite.headers["To"]["tag"]:
            self._reply(invite, source, 481, "Call/Transaction Does Not Exist")
            return
        if source[0] not in self.allowed:
            logger.warning("SIP endpoint %s refused an INVITE from %s:%d, not a trunk address",
                           self.name, *source)
            self._reply(invite, source, 403, "Forbidden")
            return
        try:
            offer = read_offer(invite)
        except SdpError as exc:
            logger.info("SIP endpoint %s: 488 for call %s: %s", self.name, invite.call_id, exc)
            self._reply(invite, source, 488, "Not Acceptable Here")
            return
        self._reply(invite, source, 100, "Trying")
        media = self.engine.open(offer.payload_type, remote=(offer.address, offer.port),
                                 dtmf_payload_type=offer.dtmf_payload_type or TELEPHONE_EVENT)
        call = InboundCall(self, invite, source, offer, media, self._wallclock())
        self._calls[call.id] = call
        logger.info("Call %s from %s to %s on %s", call.id, call.caller, call.called, self.name)
        worker = threading.Thread(target=self._run_call, args=(call,),
                                  name=f"call-{call.id[:8]}", daemon=True)
        self._workers.add(worker)
        worker.start()

    def _on_reinvite(self, invite: Message, source: tuple[str, int], call: InboundCall) -> None:
        try:
            offer = read_offer(invite)
        except SdpError:
            self._reply(invite, source, 488, "Not Acceptable Here", to_tag=call.local_tag)
            return
        call.on_hold = offer.on_hold
        if not offer.on_hold:
            call.media.remote = (offer.address, offer.port)
        direction = {"sendonly": "recvonly", "inactive": "inactive"}.get(offer.direction,
                                                                         "sendrecv")
        body = build_sdp(call.media.local_address, [call.offer.payload_type],
                         call.offer.dtmf_payload_type, direction)
        data = self._reply(invite, source, 200, "OK", self._dialog_headers(call), body,
                           to_tag=call.local_tag)
        self._retransmit((call.id, "invite"), data, source)

    def _on_cancel(self, cancel: Message, source: tuple[str, int],
                   call: InboundCall | None) -> None:
        if call is None or cancel.branch != call.invite.branch:
            self._reply(cancel, source, 481, "Call/Transaction Does Not Exist")
            return
        self._reply(cancel, source, 200, "OK")
        if call.state is CallState.RINGING:
            data = self._reply(call.invite, call.source, 487, "Request Terminated",
                               to_tag=call.local_tag)
            self._retransmit((call.id, "invite"), data, call.source)
            self._end(call, "cancelled by caller")

    def _on_bye(self, bye: Message, source: tuple[str, int], call: InboundCall | None) -> None:
        outbound = self._outbound.get(bye.call_id)
        if outbound is not None and bye.headers["To"]["tag"] == outbound.local_tag:
            self._reply(bye, source, 200, "OK")
            self._end_outbound(outbound, Outcome.ENDED, None, "callee hung up")
            return
        if call is None or bye.headers["To"]["tag"] != call.local_tag:
            self._reply(bye, source, 481, "Call/Transaction Does Not Exist")
            return
        self._reply(bye, source, 200, "OK")
        self._retransmits.pop((call.id, "invite"), None)
        self._end(call, "caller hung up")

    def _on_response(self, response: Message) -> None:
        method = response.cseq.method
        if method in ("BYE", "CANCEL") and response.status_code >= 200:
            self._retransmits.pop((response.call_id, method.lower()), None)
        registration = self.registration
        if registration is not None and method == "REGISTER" and \
                response.call_id == registration.call_id and \
                response.cseq.number == registration.cseq:
            self._on_register_response(registration, response)
            return
        outbound = self._outbound.get(response.call_id)
        if outbound is None or method != "INVITE":
            return
        if response.cseq.number == outbound.cseq:
            self._on_invite_response(outbound, response)
        elif response.status_code >= 300 and self.proxy is not None:
            # a retransmitted challenge of an earlier attempt: ACK it again in its transaction
            ack = in_transaction_request(outbound, "ACK", response.value("To") or "",
                                         (response.branch or "", response.cseq.number))
            self._send(ack, self.proxy)

    # Registration.

    def register(self, expires_s: int = REGISTER_EXPIRES_S) -> Registration:
        """Register this trunk with the carrier, and keep it registered until `stop`."""
        if self.proxy is None or self.credentials is None:
            raise ValueError(f"trunk {self.name} needs a proxy and credentials to register")
        with self._lock:
            self.registration = Registration(self, *self.credentials, expires_s=expires_s)
            self._send_register(self.registration, expires_s)
        return self.registration

    def unregister(self) -> None:
        """Remove our binding at the registrar (Expires: 0), without waiting for the answer."""
        with self._lock:
            registration, self.registration = self.registration, None
            self._timers.pop(("register", "refresh"), None)
            self._retransmits.pop(("register", "request"), None)
            if registration is not None and registration.state is RegistrationState.REGISTERED:
                assert self.proxy is not None
                self._send(registration.request(0), self.proxy)

    def _send_register(self, registration: Registration, expires: int,
                       authorization: tuple[str, str] | None = None) -> None:
        assert self.proxy is not None
        if authorization is None:
            registration.authenticated = False
        self._transmit(("register", "request"), registration.request(expires, authorization),
                       self.proxy,
                       on_give_up=lambda: self._register_failed(registration, "no response"))

    def _on_register_response(self, registration: Registration, response: Message) -> None:
        code = response.status_code
        if code < 200:
            return
        self._retransmits.pop(("register", "request"), None)
        asked = registration.expires_s
        if code < 300:
            registration.granted_s = granted_expires(response, asked)
            registration.state, registration.last_error = RegistrationState.REGISTERED, None
            registration.retry_s = RETRY_S[0]
            self._schedule(("register", "refresh"), registration.granted_s * REFRESH_FRACTION,
                           lambda: self._refresh(registration))
            logger.info("Trunk %s registered as %s for %d s", self.name, registration.aor,
                        registration.granted_s)
        elif code in (401, 407) and (answer := registration.challenge_answer(response)):
            self._send_register(registration, asked, answer)
        elif code == 423 and (minimum := min_expires(response)) and minimum > asked:
            registration.expires_s = minimum
            self._send_register(registration, minimum)
        else:
            self._register_failed(registration, f"{code} {response.reason}".strip())

    def _refresh(self, registration: Registration) -> None:
        with self._lock:
            if self.registration is registration:
                self._send_register(registration, registration.expires_s)

    def _register_failed(self, registration: Registration, reason: str) -> None:
        with self._lock:
            if self.registration is not registration:
                return
            registration.state, registration.last_error = RegistrationState.FAILED, reason
            delay, registration.retry_s = registration.retry_s, min(registration.retry_s * 2,
                                                                    RETRY_S[1])
            self._schedule(("register", "refresh"), delay, lambda: self._refresh(registration))
        logger.warning("Trunk %s: registration failed (%s); retrying in %g s", self.name,
                       reason, delay)
        if self.on_trunk_failure is not None:
            self.on_trunk_failure(f"REGISTER: {reason}")

    # Outgoing calls.

    def place_call(self, number: str, ring_timeout_s: float = 30.0,
                   caller_id: str | None = None) -> OutboundCall:
        """Call `number` through this trunk, from `caller_id` (default: the trunk's);
        returns at once, see `OutboundCall.wait`."""
        if self.proxy is None or self.domain is None:
            raise ValueError(f"trunk {self.name} has no proxy for outgoing calls")
        call = OutboundCall(self, number, f"sip:{number}@{self.domain}", self.engine.open(),
                            caller_id or self.caller_id)
        with self._lock:
            self._outbound[call.call_id] = call
            call.invited_at = self._clock()
            self._send_invite(call, None)
            self._schedule((call.call_id, "ring"), ring_timeout_s,
                           lambda: self._ring_timeout(call, ring_timeout_s))
        logger.info("Calling %s through %s (call %s)", number, self.name, call.call_id)
        return call

    def _send_invite(self, call: OutboundCall, authorization: tuple[str, str] | None) -> None:
        assert self.proxy is not None
        call.invite = build_invite(call, authorization)
        self._transmit((call.call_id, "out-invite"), call.invite, self.proxy)
        self._schedule((call.call_id, "provisional"), self.provisional_timeout_s,
                       lambda: self._no_provisional(call))

    def _on_invite_response(self, call: OutboundCall, response: Message) -> None:
        code = response.status_code
        self._retransmits.pop((call.call_id, "out-invite"), None)
        self._timers.pop((call.call_id, "provisional"), None)
        if code < 200:
            call.provisional = code
            if code >= 180:
                call.time_setup(self._clock(), "ringing")
            if take_media(call, response):
                call.early_media = True
            return
        self._timers.pop((call.call_id, "ring"), None)
        if code < 300:
            learn_dialog(call, response)
            take_media(call, response)
            ack, destination = in_dialog_request(call, "ACK", call.cseq)
            self._send(ack, destination)  # every copy of the 2xx gets its ACK
            if call.outcome is Outcome.PENDING:
                call.time_setup(self._clock(), "answered")
                call.outcome, call.status, call.reason = Outcome.ANSWERED, code, response.reason
                call.answered.set()
                call.finished.set()
                logger.info("Call %s to %s answered", call.call_id, call.number)
            elif call.outcome is not Outcome.ANSWERED:  # answered after we gave up
                self._bye_outbound(call)
            return
        assert self.proxy is not None
        self._send(in_transaction_request(call, "ACK", response.value("To") or ""), self.proxy)
        if code in (401, 407) and not call.authenticated and self.credentials:
            authorization = digest_authorization(response, "INVITE", call.uri,
                                                 *self.credentials)
            if authorization is not None:
                call.authenticated, call.cseq, call.branch = True, call.cseq + 1, new_branch()
                self._send_invite(call, authorization)
                return
        outcome = Outcome.TRUNK_FAILED if code in TRUNK_FAILURE_STATUSES else Outcome.REFUSED
        self._end_outbound(call, outcome, code, f"{code} {response.reason}".strip())

    def _no_provisional(self, call: OutboundCall) -> None:
        with self._lock:
            if call.provisional is None and call.outcome is Outcome.PENDING:
                self._retransmits.pop((call.call_id, "out-invite"), None)
                self._end_outbound(call, Outcome.TRUNK_FAILED, None,
                                   f"no provisional reply within {self.provisional_timeout_s:g} s")

    def _ring_timeout(self, call: OutboundCall, seconds: float) -> None:
        with self._lock:
            if call.outcome is Outcome.PENDING:
                self._cancel_outbound(call, f"no answer within {seconds:g} s")

    def _cancel_outbound(self, call: OutboundCall, reason: str = "cancelled") -> None:
        with self._lock:
            if call.outcome is not Outcome.PENDING:
                return
            self._retransmits.pop((call.call_id, "out-invite"), None)
            for kind in ("provisional", "ring"):
                self._timers.pop((call.call_id, kind), None)
            if call.provisional is not None and self.proxy is not None:
                cancel = in_transaction_request(call, "CANCEL", f"<{call.uri}>")
                self._transmit((call.call_id, "cancel"), cancel, self.proxy)
            self._end_outbound(call, Outcome.CANCELLED, None, reason)

    def _hangup_outbound(self, call: OutboundCall) -> None:
        with self._lock:
            if call.outcome is Outcome.ANSWERED:
                self._bye_outbound(call)
                self._end_outbound(call, Outcome.ENDED, None, "hung up by hotline")
            else:
                self._cancel_outbound(call)

    def _bye_outbound(self, call: OutboundCall) -> None:
        bye, destination = in_dialog_request(call, "BYE", call.cseq + 1)
        self._transmit((call.call_id, "bye"), bye, destination)

    def _end_outbound(self, call: OutboundCall, outcome: Outcome, status: int | None,
                      reason: str) -> None:
        first_outcome = call.outcome is Outcome.PENDING
        if first_outcome:
            call.time_setup(self._clock(), outcome)
        if first_outcome or outcome is Outcome.ENDED:
            call.outcome, call.reason = outcome, reason
            call.status = status if status is not None else call.status
        if outcome is not Outcome.ANSWERED and not call.ended.is_set():
            call.media.close()
            call.ended_at = self._clock()
            call.ended.set()
            logger.info("Call %s to %s: %s (%s)", call.call_id, call.number, outcome, reason)
        call.finished.set()  # last: whoever waits on it sees the call's final state
        if outcome is Outcome.TRUNK_FAILED and first_outcome and self.on_trunk_failure:
            self.on_trunk_failure(f"INVITE to {call.number}: {reason}")

    # Actions of the call's worker.

    def _run_call(self, call: InboundCall) -> None:
        try:
            self.on_call(call)
        except Exception:
            logger.exception("Call %s: the flow failed; hanging up", call.id)
        finally:
            call.hangup()
            self._workers.discard(threading.current_thread())

    def _respond_invite(self, call: InboundCall, code: int, reason: str,
                        headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
        with self._lock:
            if call.state is not CallState.RINGING:
                return b""
            return self._reply(call.invite, call.source, code, reason, headers or [], body,
                               to_tag=call.local_tag)

    def _answer(self, call: InboundCall) -> None:
        body = build_sdp(call.media.local_address, [call.offer.payload_type],
                         call.offer.dtmf_payload_type)
        with self._lock:
            data = self._respond_invite(call, 200, "OK", self._dialog_headers(call), body)
            if not data:
                return
            call.state, call.answered_at = CallState.ANSWERED, self._wallclock()
            self._retransmit((call.id, "invite"), data, call.source,
                             on_give_up=lambda: self._no_ack(call))
            if self.media_timeout_s is not None:
                call.media.last_heard = time.monotonic()
                self._schedule((call.id, "media"), MEDIA_CHECK_S,
                               lambda: self._check_media(call))

    def _reject(self, call: InboundCall, code: int, reason: str) -> None:
        with self._lock:
            data = self._respond_invite(call, code, reason)
            if data:
                self._retransmit((call.id, "invite"), data, call.source)
                self._end(call, f"rejected {code} {reason}")

    def _hangup(self, call: InboundCall) -> None:
        with self._lock:
            if call.state is CallState.RINGING:
                self._reject(call, 480, "Temporarily Unavailable")
            elif call.state is CallState.ANSWERED:
                data, destination = self._bye(call)
                self._transmit((call.id, "bye"), data, destination)
                self._retransmits.pop((call.id, "invite"), None)
                self._end(call, "hung up by hotline")

    def _no_ack(self, call: InboundCall) -> None:
        logger.warning("Call %s: no ACK for our 200 within %g s", call.id,
                       self.transaction_timeout_s)
        with self._lock:
            if call.state is CallState.ANSWERED:
                data, destination = self._bye(call)
                self._transmit((call.id, "bye"), data, destination)
                self._end(call, f"{CUT_OFF}: no ACK from the caller")

    def _check_media(self, call: InboundCall) -> None:
        """The media watchdog's tick (endpoint thread): end a call gone silent."""
        timeout = self.media_timeout_s
        assert timeout is not None
        with self._lock:
            if call.state is not CallState.ANSWERED:
                return
            silent_s = time.monotonic() - call.media.last_heard
            if call.on_hold or silent_s < timeout:
                self._schedule((call.id, "media"), MEDIA_CHECK_S,
                               lambda: self._check_media(call))
                return
            logger.warning("Call %s: nothing from the caller for %.1f s; ending it as cut off",
                           call.id, silent_s)
            data, destination = self._bye(call)  # in case only the media path died
            self._transmit((call.id, "bye"), data, destination)
            self._retransmits.pop((call.id, "invite"), None)
            self._end(call, f"{CUT_OFF}: no audio from the caller for {timeout:g} s")

    def _end(self, call: InboundCall, reason: str) -> None:
        if call.state is CallState.ENDED:
            return
        call.state, call.end_reason, call.ended_at = CallState.ENDED, reason, self._clock()
        call.media.close()
        call.ended.set()
        logger.info("Call %s ended: %s", call.id, reason)

    # Building and sending messages.

    def _dialog_headers(self, call: InboundCall) -> list[tuple[str, str]]:
        host, port = self.address
        return [*(("Record-Route", rr) for rr in call.invite.values("Record-Route")),
                ("Contact", f"<sip:hotline@{host}:{port}>"), ("Allow", ALLOW),
                ("Content-Type", "application/sdp")]

    def _reply(self, request: Message, source: tuple[str, int], code: int, reason: str,
               headers: list[tuple[str, str]] | None = None, body: bytes = b"",
               to_tag: str | None = None) -> bytes:
        to = request.value("To") or ""
        if to_tag and code > 100 and ";tag=" not in to:
            to = f"{to};tag={to_tag}"
        lines = [*(("Via", v) for v in request.values("Via")), ("From", request.value("From")
                 or ""), ("To", to), ("Call-ID", request.call_id),
                 ("CSeq", request.value("CSeq") or ""), ("Server", USER_AGENT), *(headers or [])]
        if code < 200 or code >= 300:
            lines = [line for line in lines if line[0] not in ("Content-Type", "Record-Route")]
        data = format_message(f"{SIP_VERSION} {code} {reason}", lines, body)
        self._send(data, source)
        return data

    def _bye(self, call: InboundCall) -> tuple[bytes, tuple[str, int]]:
        call._cseq += 1
        route = uris(", ".join(call.invite.values("Record-Route")))
        contact = uris(call.invite.value("Contact") or "")
        target = contact[0] if contact else f"sip:{call.source[0]}:{call.source[1]}"
        next_hop = route[0] if route else target
        to = call.invite.value("To") or ""
        data = format_message(f"BYE {target} {SIP_VERSION}", [
            ("Via", via(self.address, new_branch())), ("Max-Forwards", "70"),
            *([("Route", ", ".join(f"<{r}>" for r in route))] if route else []),
            ("From", f"{to};tag={call.local_tag}" if ";tag=" not in to else to),
            ("To", call.invite.value("From") or ""), ("Call-ID", call.id),
            ("CSeq", f"{call._cseq} BYE"), ("User-Agent", USER_AGENT)])
        try:
            destination = uri_address(next_hop)
        except SipParseError:
            destination = call.source
        return data, destination

    def _transmit(self, key: tuple[str, str], data: bytes, destination: tuple[str, int],
                  on_give_up: Callable[[], None] | None = None) -> None:
        """Send a request now and retransmit it from T1 until `_retransmits[key]` is popped."""
        self._send(data, destination)
        self._retransmit(key, data, destination, on_give_up)

    def _retransmit(self, key: tuple[str, str], data: bytes, destination: tuple[str, int],
                    on_give_up: Callable[[], None] | None = None) -> None:
        """Retransmit `data`, already sent, from T1 until `_retransmits[key]` is popped."""
        now = self._clock()
        self._retransmits[key] = _Retransmit(data, destination, now + self.t1_s, self.t1_s,
                                             now + self.transaction_timeout_s, on_give_up)
        self._waker.wake()

    def _schedule(self, key: tuple[str, str], delay: float, callback: Callable[[], None]) -> None:
        self._timers[key] = (self._clock() + delay, callback)
        self._waker.wake()

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(data, destination)

