"""A trunk's SIP endpoint: one UDP port for the carrier's calls and ours.

Stock pyVoIP's phone answers no OPTIONS, never sends 487 after CANCEL, builds
ACKs and BYEs with the wrong tags, sends everything to one configured server,
and accepts INVITEs from anyone. This endpoint keeps pyVoIP for parsing
(`message.py`) and runs RFC 3261's transactions itself. It owns the socket, the
receive loop, retransmissions and timers (the `Transport` of `transport.py`) and
hands each message to the part it belongs to:

- OPTIONS gets 200 with Allow, Supported and Accept, in or out of a dialog (503 outside
  one while the endpoint drains, as new INVITEs do);
- INVITE, ACK, CANCEL, BYE, INFO and UPDATE of calls from the carrier, and the
  responses to our session refreshes, go to the `Answerer` (`answerer.py`); the
  callee's requests in our calls (BYE, re-INVITE, INFO, UPDATE) and the responses to
  our INVITEs to the `Dialer` (`outbound.py`); responses to REGISTER to the
  `Registration` (`registration.py`);
- other requests in unknown dialogs get 481, other methods 501, a Request-URI
  that is not sip:, sips: or tel: 416;
- a malformed request gets 400 (505 for another SIP version) when its Via, From,
  To, Call-ID and CSeq can be read to answer it; other bad datagrams are dropped;
- an ICMP error for an INVITE we sent (port or host unreachable) fails that call
  at once.

Each incoming call runs the application's `on_call` in a thread of its own. A call that
another process carried (a node that died) can be taken up from its `LegState`:
`take_up_call` for a call from the carrier, `take_up_leg` for one we placed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trunks.voip.answerer import Answerer
from trunks.voip.inbound import InboundCall
from trunks.voip.leg_state import LegState
from trunks.voip.media import RtpEngine
from trunks.voip.message import (
    ALLOW,
    EXTENSIONS,
    SUPPORTED,
    Message,
    SipParseError,
    build_response,
    parse_message,
    shorten,
)
from trunks.voip.outbound import PROVISIONAL_TIMEOUT_S, Dialer, OutboundCall
from trunks.voip.refusals import REFUSED
from trunks.voip.registration import REGISTER_EXPIRES_S, Registration
from trunks.voip.session_timer import MIN_SE_S
from trunks.voip.transport import Key
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
IP_RECVERR, IPV6_RECVERR = 11, 25
"""Linux socket options (<linux/in.h>, <linux/in6.h>) that Python's socket module lacks."""
_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""struct sock_extended_err: errno, origin, ICMP type and code, pad, info, data."""
URI_SCHEMES = ("sip:", "sips:", "tel:")
"""Request-URI schemes we answer; others get 416."""
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class _Retransmit:
    data: bytes
    destination: tuple[str, int]
    next_at: float
    interval: float
    give_up_at: float
    on_give_up: Callable[[], None] | None = None


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
                 linger_s: float = LINGER_S, media_timeout_s: float | None = None,
                 symmetric_rtp: bool = True, min_se_s: int = MIN_SE_S,
                 advertise: tuple[str, int] | None = None) -> None:
        """`media_timeout_s`: an answered call from which nothing (audio or DTMF) arrives
        for this long, while not on hold, is ended as cut off; None: never.
        `symmetric_rtp`: each call's media latches to where the peer's RTP really comes
        from (for peers behind NAT; see `RtpStream._latch`). `min_se_s`: the shortest
        session-timer interval accepted (RFC 4028 allows no less than 90 s). `advertise`:
        the address our Via and Contact headers announce, when peers must reach us at
        another than `bind` (a wildcard bind, NAT)."""
        self.name = name
        self.linger_s = linger_s
        self.proxy = proxy
        self.domain = domain or (proxy[0] if proxy else None)
        self.credentials = credentials
        self.on_trunk_failure = on_trunk_failure
        self.t1_s = t1_s
        self.t2_s = T2_S * t1_s / T1_S
        self._transaction_timeout_s = TRANSACTION_TIMEOUT_T1 * t1_s
        self.engine = engine
        self.ignored = 0
        self._clock = clock
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
        self.bound: tuple[str, int] = self._sock.getsockname()[:2]
        """The (host, port) the socket is bound to."""
        self._address = advertise or self.bound
        self._retransmits: dict[Key, _Retransmit] = {}
        self._timers: dict[Key, tuple[float, Callable[[], None]]] = {}
        self._lock = threading.RLock()
        self._inbound = Answerer(self, name, engine, on_call, allowed, wallclock=wallclock,
                                 media_timeout_s=media_timeout_s,
                                 symmetric_rtp=symmetric_rtp, min_se_s=min_se_s)
        self._outbound = Dialer(self, name, engine, proxy=proxy, domain=self.domain,
                                credentials=credentials, caller_id=caller_id,
                                provisional_timeout_s=provisional_timeout_s,
                                on_trunk_failure=on_trunk_failure,
                                symmetric_rtp=symmetric_rtp)
        self.registration: Registration | None = None
        self._stopping = threading.Event()
        self._waker = Waker()
        self._thread = threading.Thread(target=self._run, name=f"sip-{name}", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) our SIP headers announce: the advertised address, or the one
        bound."""
        return self._address

    @property
    def draining(self) -> bool:
        """Whether the endpoint takes no new calls: new INVITEs and OPTIONS outside a call
        get 503, so a front door probing it sends calls elsewhere; calls up go on."""
        return self._inbound.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._inbound.draining = value

    @property
    def calls(self) -> list[InboundCall]:
        """The incoming calls not yet ended."""
        return self._inbound.calls

    def start(self) -> None:
        self._thread.start()
        logger.info("SIP endpoint %s listening on %s:%d%s", self.name, *self.bound,
                    "" if self.address == self.bound else
                    f" (announced as {self.address[0]}:{self.address[1]})")

    def end_calls(self, timeout: float = 5.0) -> None:
        """Hang up every incoming call and wait (up to `timeout`) for its worker to finish,
        so the call's record is complete."""
        self._inbound.end_calls(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Hang up every call, then stop."""
        self.end_calls(timeout)
        self._outbound.hangup_all()
        self.unregister()
        if not stop_loop(self._stopping, self._waker, self._thread, timeout):
            return
        self._sock.close()
        self._waker.close()

    def place_call(self, number: str, ring_timeout_s: float = 30.0,
                   caller_id: str | None = None) -> OutboundCall:
        """Call `number` through this trunk, from `caller_id` (default: the trunk's);
        returns at once, see `OutboundCall.wait`."""
        return self._outbound.place_call(number, ring_timeout_s, caller_id)

    def take_up_call(self, state: LegState,
                     on_call: Callable[[InboundCall], None]) -> InboundCall:
        """Take up a call from the carrier that another process answered (see
        `Answerer.take_up`); `on_call` runs it."""
        return self._inbound.take_up(state, on_call)

    def take_up_leg(self, state: LegState) -> OutboundCall:
        """Take up a call another process placed through this trunk (`Dialer.take_up`)."""
        return self._outbound.take_up(state)

    def register(self, expires_s: int = REGISTER_EXPIRES_S) -> Registration:
        """Register this trunk with the carrier, and keep it registered until `stop`."""
        if self.proxy is None or self.domain is None or self.credentials is None:
            raise ValueError(f"trunk {self.name} needs a proxy and credentials to register")
        with self._lock:
            if self.registration is not None:
                self.registration.stop(unregister=False)
            self.registration = Registration(self, self.name, self.proxy, self.domain,
                                             *self.credentials, expires_s=expires_s,
                                             on_trunk_failure=self.on_trunk_failure)
            self.registration.start()
        return self.registration

    def unregister(self) -> None:
        """Remove our binding at the registrar (Expires: 0), without waiting for the answer."""
        with self._lock:
            registration, self.registration = self.registration, None
            if registration is not None:
                registration.stop()

    # The Transport that calls and the registration use.

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def transaction_timeout_s(self) -> float:
        return self._transaction_timeout_s

    def now(self) -> float:
        return self._clock()

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(data, destination)

    def transmit(self, key: Key, data: bytes, destination: tuple[str, int],
                 on_give_up: Callable[[], None] | None = None) -> None:
        """Send a request now and retransmit it from T1 until `stop_retransmit(key)`."""
        self.send(data, destination)
        self.retransmit(key, data, destination, on_give_up)

    def retransmit(self, key: Key, data: bytes, destination: tuple[str, int],
                   on_give_up: Callable[[], None] | None = None) -> None:
        """Retransmit `data`, already sent, from T1 until `stop_retransmit(key)`."""
        with self._lock:
            now = self._clock()
            self._retransmits[key] = _Retransmit(data, destination, now + self.t1_s,
                                                 self.t1_s,
                                                 now + self.transaction_timeout_s, on_give_up)
        self._waker.wake()

    def stop_retransmit(self, key: Key) -> None:
        with self._lock:
            self._retransmits.pop(key, None)

    def schedule(self, key: Key, delay: float, callback: Callable[[], None]) -> None:
        with self._lock:
            self._timers[key] = (self._clock() + delay, callback)
        self._waker.wake()

    def cancel(self, key: Key) -> None:
        with self._lock:
            self._timers.pop(key, None)

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
                self._on_parse_error(exc, source[:2])
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
            if errors and call_id is not None:
                self._outbound.unreachable(call_id[1].decode(errors="replace"),
                                           os.strerror(errors[0]).lower())

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
                    self.send(retransmit.data, retransmit.destination)
                    retransmit.interval = min(retransmit.interval * 2, self.t2_s)
                    retransmit.next_at = now + retransmit.interval
            for key, (at, callback) in list(self._timers.items()):
                if now >= at:
                    del self._timers[key]
                    give_ups.append(callback)
            self._inbound.forget_ended(now, self.linger_s)
            self._outbound.forget_ended(now, self.linger_s)
        for give_up in give_ups:
            give_up()

    # Messages from the carrier.

    def _on_request(self, request: Message, source: tuple[str, int]) -> None:
        method = request.method
        call = self._inbound.get(request.call_id)
        unknown = request.tokens("Require") - EXTENSIONS
        if method != "ACK" and not request.uri.lower().startswith(URI_SCHEMES):
            self._reply(request, source, 416, "Unsupported URI Scheme")
        elif unknown and method not in ("ACK", "CANCEL"):
            self._reply(request, source, 420, "Bad Extension",
                        [("Unsupported", ", ".join(sorted(unknown)))])
        elif method == "OPTIONS" and self.draining and call is None:
            self._reply(request, source, 503, "Service Unavailable", [("Retry-After", "30")])
        elif method == "OPTIONS":
            self._reply(request, source, 200, "OK", [("Allow", ALLOW), ("Supported", SUPPORTED),
                                                    ("Accept", "application/sdp")])
        elif method in ("INVITE", "INFO", "UPDATE") and self._outbound.on_request(request,
                                                                               source):
            pass
        elif method == "INVITE":
            self._inbound.on_invite(request, source)
        elif method == "INFO" and call is not None:
            call.on_info(request, source)
        elif method == "UPDATE" and call is not None:
            call.on_update(request, source)
        elif method == "ACK":
            if call is not None:
                call.on_ack()
            else:
                self._outbound.on_ack(request)
        elif method == "CANCEL" and call is not None:
            call.on_cancel(request, source)
        elif method == "BYE" and self._outbound.on_bye(request, source):
            pass
        elif method == "BYE" and call is not None:
            call.on_bye(request, source)
        elif method in ("CANCEL", "BYE") or (call is None and request.headers["To"]["tag"]):
            self._reply(request, source, 481, "Call/Transaction Does Not Exist")
        else:
            self._reply(request, source, 501, "Not Implemented", [("Allow", ALLOW)])

    def _on_parse_error(self, error: SipParseError, source: tuple[str, int]) -> None:
        """Answer a malformed request that can be answered (400, 505); drop the rest."""
        self.ignored += 1
        answered = error.request is not None
        logger.debug("SIP endpoint %s %s a datagram from %s:%d: %s", self.name,
                     f"answered {error.status} to" if answered else "ignored", *source,
                     shorten(str(error), 200))
        if error.request is not None:
            REFUSED.labels(self.name, "malformed").inc()
            self._reply(error.request, source, error.status, error.reason)

    def _on_response(self, response: Message) -> None:
        method = response.cseq.method
        if method in ("BYE", "CANCEL") and response.status_code >= 200:
            self._retransmits.pop((response.call_id, method.lower()), None)
        registration = self.registration
        if registration is not None and registration.on_response(response):
            return
        if not self._inbound.on_response(response):
            self._outbound.on_response(response)

    def _reply(self, request: Message, source: tuple[str, int], code: int, reason: str,
               headers: list[tuple[str, str]] | None = None) -> None:
        self.send(build_response(request, code, reason, headers), source)
