"""Outgoing calls through a trunk: the INVITE client transaction and its dialog.

Stock pyVoIP's `invite()` blocks, and acts only on 200, 404 and 503. Here an
`OutboundCall` is driven by the endpoint's receive loop and never blocks it:

- the INVITE is retransmitted from T1 until any response arrives;
- no provisional response within `provisional_timeout_s` (1 s): the attempt
  fails as a *trunk* failure and `on_trunk_failure` tells the monitor, so the
  caller's set-up can move to the next trunk at once; an ICMP port or host unreachable
  for the INVITE (read by the endpoint from its socket's error queue) fails it the same
  way without waiting;
- 180 and 183 (with SDP: early media) are reported; 2xx is ACKed along the
  route set (re-ACKed if retransmitted); every 3xx-6xx final is ACKed in the
  INVITE's transaction and reported with its status;
- 401/407 is answered once with digest credentials;
- `cancel()` (or the ring timeout) sends CANCEL and absorbs the 487;
- the post-dial delay, from the first INVITE to the first 18x or 2xx (or to the
  failure), goes to the `hotline_setup_seconds` histogram once per call.

`outcome` tells a failure of the trunk (timeout, 408, 5xx) from a refusal by
the callee (busy, declined, not found), which must not be retried elsewhere.
A `Dialer` places one trunk's calls and keeps them a while after they end, to
ACK a retransmitted final. `leg_state` gives an answered call's dialog as another
process needs it; `Dialer.take_up` rebuilds such a call, and `Dialer.reoffer` moves the
callee's media to us with a re-INVITE.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Histogram

from trunks.voip.auth import digest_authorization
from trunks.voip.leg_state import MARGIN, OUTBOUND, LegState
from trunks.voip.media import PCMA, PCMU, TELEPHONE_EVENT, RtpEngine, RtpStream
from trunks.voip.message import (
    ALLOW,
    SDP,
    SIP_VERSION,
    Message,
    SipParseError,
    build_response,
    format_message,
    new_branch,
    new_call_id,
    new_tag,
    shorten,
    sip_host,
    uri_address,
    uris,
    via,
)
from trunks.voip.sdp import SdpError, SdpSession, follow_offer, read_offer
from trunks.voip.transport import Transport

logger = logging.getLogger(__name__)

PROVISIONAL_TIMEOUT_S = 1.0
"""A trunk that sends no 100 Trying within this long is failing."""
TRUNK_FAILURE_STATUSES = frozenset({408, 480, 500, 502, 503, 504})
"""Finals that say the path failed, not the callee: try the next trunk."""
SETUP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SETUP_SECONDS = Histogram(
    "hotline_setup_seconds", "Post-dial delay of outgoing calls: from the first INVITE to "
    "the first 18x or 2xx, or to the failure; result is ringing, answered, trunk_failed, "
    "refused or cancelled", ["trunk", "result"], buckets=SETUP_BUCKETS_S, registry=None)
"""Process-wide; `ivr.metrics` registers it with each server's registry."""


class Outcome(enum.StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    TRUNK_FAILED = "trunk failed"
    """Timeout, no provisional reply, ICMP unreachable, 408, 480 or 5xx: the next trunk may
    succeed."""
    REFUSED = "refused"
    """Busy, declined, not found, or any other final: do not retry elsewhere."""
    CANCELLED = "cancelled"
    ENDED = "ended"


@dataclass
class OutboundCall:
    """An outgoing call; its public methods are for the worker that placed it."""

    dialer: Dialer
    number: str
    uri: str
    media: RtpStream
    caller_id: str
    """The user part of our From address."""
    call_id: str = ""
    local_tag: str = field(default_factory=new_tag)
    branch: str = field(default_factory=new_branch)
    cseq: int = 1
    outcome: Outcome = Outcome.PENDING
    status: int | None = None
    reason: str = ""
    provisional: int | None = None
    """The latest 1xx status seen (100, 180, 183)."""
    early_media: bool = False
    on_hold: bool = False
    """Whether the callee holds the call (a re-INVITE with sendonly or inactive)."""
    sdp: SdpSession = field(default_factory=SdpSession)
    """Our SDP for this call: the offer, then answers to the callee's re-INVITEs."""
    remote_tag: str = ""
    route: list[str] = field(default_factory=list)
    remote_target: str = ""
    invite: bytes = b""
    invited_at: float | None = None
    """Monotonic time the first INVITE went out, for the post-dial delay."""
    setup_timed: bool = False
    authenticated: bool = False
    ended_at: float | None = None
    """Monotonic time the call ended; the endpoint forgets it some time after."""
    answered: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    """Set once the set-up has an outcome (answered or failed)."""
    ended: threading.Event = field(default_factory=threading.Event)
    reoffered: Callable[[bool], None] | None = None
    """Told whether our re-INVITE (`Dialer.reoffer`) was answered 2xx with SDP."""
    reoffer_status: int | None = None
    """The final status our re-offer got (None: none yet, or no answer at all)."""

    def __post_init__(self) -> None:
        if not self.call_id:
            self.call_id = new_call_id(self.dialer.transport.address[0])

    @property
    def from_header(self) -> str:
        """Our From header value, the same in every request of the call."""
        host = sip_host(self.dialer.transport.address[0])
        return f"<sip:{self.caller_id}@{host}>;tag={self.local_tag}"

    @property
    def end_reason(self) -> str | None:
        """Why the call ended, once it has (the same words as an incoming call's)."""
        return (self.reason or str(self.outcome)) if self.ended.is_set() else None

    @property
    def trunk_failed(self) -> bool:
        return self.outcome is Outcome.TRUNK_FAILED

    def time_setup(self, now: float, result: str) -> None:
        """Observe the post-dial delay once, at the first 18x or 2xx or at the failure."""
        if self.invited_at is not None and not self.setup_timed:
            self.setup_timed = True
            SETUP_SECONDS.labels(self.dialer.name, result.replace(" ", "_")).observe(
                now - self.invited_at)

    def wait(self, timeout: float | None = None) -> Outcome:
        """Wait for the set-up to finish; return the outcome (PENDING on timeout)."""
        self.finished.wait(timeout)
        return self.outcome

    def cancel(self) -> None:
        """Give up on a call that has not been answered."""
        self.dialer.cancel(self)

    def hangup(self) -> None:
        """BYE if answered, CANCEL if still ringing."""
        self.dialer.hangup(self)

    def reoffer(self, done: Callable[[bool], None]) -> None:
        """See `Dialer.reoffer`."""
        self.dialer.reoffer(self, done)

    def drop(self, reason: str) -> None:
        """End the call here without a BYE: the callee has no such dialog (481)."""
        with self.dialer.transport.lock:
            self.dialer.transport.stop_retransmit((self.call_id, "reoffer"))
            self.dialer._end(self, Outcome.ENDED, None, reason)

    def leg_state(self) -> LegState:
        """The answered call's dialog as it stands, for another process to take it up."""
        with self.dialer.transport.lock:
            return LegState(OUTBOUND, self.dialer.name, self.call_id, self.local_tag,
                            self.cseq, self.sdp.id, self.sdp.version or self.sdp.id,
                            self.media.payload_type, self.media.dtmf_payload_type,
                            self.on_hold, number=self.number, uri=self.uri,
                            caller_id=self.caller_id, remote_tag=self.remote_tag,
                            route=list(self.route), remote_target=self.remote_target)


def build_invite(call: OutboundCall, authorization: tuple[str, str] | None = None) -> bytes:
    """The INVITE (or its authenticated retry) for `call`; it goes to the trunk's proxy."""
    local = call.dialer.transport.address
    headers = [("Via", via(local, call.branch)), ("Max-Forwards", "70"),
               ("From", call.from_header), ("To", f"<{call.uri}>"), ("Call-ID", call.call_id),
               ("CSeq", f"{call.cseq} INVITE"),
               ("Contact", f"<sip:hotline@{sip_host(local[0])}:{local[1]}>"), ("Allow", ALLOW),
               ("Content-Type", "application/sdp"), ("User-Agent", "hotline")]
    if authorization is not None:
        headers.append(authorization)
    return format_message(f"INVITE {call.uri} {SIP_VERSION}", headers,
                          call.sdp.describe(call.media.local_address, [PCMU, PCMA],
                                            TELEPHONE_EVENT))


def in_transaction_request(call: OutboundCall, method: str, to: str,
                           transaction: tuple[str, int] | None = None) -> bytes:
    """ACK for a non-2xx final, or CANCEL: same branch and CSeq number as the INVITE
    (the current one, or the earlier `transaction` given as (branch, CSeq number))."""
    branch, cseq = transaction or (call.branch, call.cseq)
    return format_message(f"{method} {call.uri} {SIP_VERSION}", [
        ("Via", via(call.dialer.transport.address, branch)), ("Max-Forwards", "70"),
        ("From", call.from_header), ("To", to),
        ("Call-ID", call.call_id), ("CSeq", f"{cseq} {method}")])


def in_dialog_request(call: OutboundCall, method: str, cseq: int,
                      extra: list[tuple[str, str]] | None = None,
                      body: bytes = b"") -> tuple[bytes, tuple[str, int]]:
    """A request in the call's dialog (ACK for a 2xx, BYE, our re-INVITE): new branch,
    along the route set to the remote target."""
    headers = [("Via", via(call.dialer.transport.address, new_branch())), ("Max-Forwards", "70")]
    if call.route:
        headers.append(("Route", ", ".join(f"<{r}>" for r in call.route)))
    headers += [("From", call.from_header),
                ("To", f"<{call.uri}>;tag={call.remote_tag}"), ("Call-ID", call.call_id),
                ("CSeq", f"{cseq} {method}"), *(extra or [])]
    target = call.remote_target or call.uri
    data = format_message(f"{method} {target} {SIP_VERSION}", headers, body)
    try:
        destination = uri_address(call.route[0] if call.route else target)
    except SipParseError:
        destination = call.dialer.proxy or call.dialer.transport.address
    return data, destination


def learn_dialog(call: OutboundCall, response: Message) -> None:
    """Take the remote tag, route set (reversed, as a UAC) and target from a 2xx/1xx."""
    call.remote_tag = str(response.headers["To"]["tag"] or call.remote_tag)
    record_route = uris(", ".join(response.values("Record-Route")))
    if record_route:
        call.route = list(reversed(record_route))
    contact = uris(response.value("Contact") or "")
    if contact:
        call.remote_target = contact[0]


def take_media(call: OutboundCall, response: Message) -> bool:
    """Point our stream at the SDP in `response`, if it has one; say whether it did."""
    if not response.body:
        return False
    try:
        offer = read_offer(response)
    except SdpError:
        return False
    call.media.retarget((offer.address, offer.port))
    call.media.use_codec(offer.payload_type, offer.dtmf_payload_type)
    return True


class Dialer:
    """Places calls through one trunk's proxy and drives their INVITE transactions from
    the endpoint's loop; it remembers each call a while after it ends."""

    def __init__(self, transport: Transport, name: str, engine: RtpEngine, *,
                 proxy: tuple[str, int] | None, domain: str | None,
                 credentials: tuple[str, str] | None, caller_id: str,
                 provisional_timeout_s: float = PROVISIONAL_TIMEOUT_S,
                 on_trunk_failure: Callable[[str], None] | None = None,
                 symmetric_rtp: bool = True) -> None:
        self.transport = transport
        self.symmetric_rtp = symmetric_rtp
        self.name = name
        self.engine = engine
        self.proxy = proxy
        self.domain = domain
        self.credentials = credentials
        self.caller_id = caller_id
        self.provisional_timeout_s = provisional_timeout_s
        self.on_trunk_failure = on_trunk_failure
        self._calls: dict[str, OutboundCall] = {}

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def place_call(self, number: str, ring_timeout_s: float = 30.0,
                   caller_id: str | None = None) -> OutboundCall:
        """Call `number` from `caller_id` (default: the trunk's); returns at once."""
        if self.proxy is None or self.domain is None:
            raise ValueError(f"trunk {self.name} has no proxy for outgoing calls")
        call = OutboundCall(self, number, f"sip:{number}@{self.domain}",
                            self.engine.open(latching=self.symmetric_rtp),
                            caller_id or self.caller_id)
        with self.transport.lock:
            self._calls[call.call_id] = call
            call.invited_at = self.transport.now()
            self._send_invite(call, None)
            self.transport.schedule((call.call_id, "ring"), ring_timeout_s,
                                    lambda: self._ring_timeout(call, ring_timeout_s))
        logger.info("Calling %s through %s (call %s)", number, self.name, call.call_id)
        return call

    def take_up(self, state: LegState) -> OutboundCall:
        """Rebuild an answered call that another process placed, from its `state`: in
        its dialog, with a stream of ours (sending nowhere until the callee answers our
        `reoffer`). Raise ValueError if the call is up here already."""
        call = OutboundCall(self, state.number, state.uri,
                            self.engine.open(state.payload_type, latching=self.symmetric_rtp),
                            state.caller_id, call_id=state.call_id, local_tag=state.local_tag,
                            cseq=state.cseq + MARGIN, outcome=Outcome.ANSWERED, status=200,
                            reason="OK", on_hold=state.on_hold,
                            sdp=SdpSession(state.sdp_id, state.sdp_version + MARGIN),
                            remote_tag=state.remote_tag, route=list(state.route),
                            remote_target=state.remote_target)
        if state.dtmf_payload_type is not None:
            call.media.dtmf_payload_type = state.dtmf_payload_type
        call.media.sending = not state.on_hold
        call.answered.set()
        call.finished.set()
        with self.transport.lock:
            if state.call_id in self._calls:
                call.media.close()
                raise ValueError(f"call {state.call_id} is up here already")
            self._calls[call.call_id] = call
        logger.info("Call %s to %s taken up on %s", call.call_id, call.number, self.name)
        return call

    def reoffer(self, call: OutboundCall, done: Callable[[bool], None]) -> None:
        """Offer our media in a re-INVITE with our Contact (the call was taken up by this
        process); `done` is told, from the endpoint's loop, whether the callee accepted
        it (a 2xx with an SDP answer, which we follow)."""
        with self.transport.lock:
            call.reoffered = done
            call.cseq += 1
            local = self.transport.address
            body = call.sdp.describe(call.media.local_address, [call.media.payload_type],
                                     call.media.dtmf_payload_type)
            data, destination = in_dialog_request(
                call, "INVITE", call.cseq,
                [("Contact", f"<sip:hotline@{sip_host(local[0])}:{local[1]}>"),
                 ("Allow", ALLOW), ("Content-Type", SDP)], body)
            self.transport.transmit((call.call_id, "reoffer"), data, destination,
                                    on_give_up=lambda: self._reoffer_answered(call, None))

    def cancel(self, call: OutboundCall, reason: str = "cancelled") -> None:
        """CANCEL a call still being set up (nothing if it has an outcome)."""
        with self.transport.lock:
            if call.outcome is not Outcome.PENDING:
                return
            self._stop_setup(call)
            if call.provisional is not None and self.proxy is not None:
                cancel = in_transaction_request(call, "CANCEL", f"<{call.uri}>")
                self.transport.transmit((call.call_id, "cancel"), cancel, self.proxy)
            self._end(call, Outcome.CANCELLED, None, reason)

    def hangup(self, call: OutboundCall) -> None:
        """BYE if answered, CANCEL if still ringing."""
        with self.transport.lock:
            if call.outcome is Outcome.ANSWERED:
                self._send_bye(call)
                self._end(call, Outcome.ENDED, None, "hung up by hotline")
            else:
                self.cancel(call)

    def hangup_all(self) -> None:
        with self.transport.lock:
            calls = list(self._calls.values())
        for call in calls:
            call.hangup()

    def on_response(self, response: Message) -> None:
        """A response to one of our INVITEs (others are ignored)."""
        call = self._calls.get(response.call_id)
        if call is None or response.cseq.method != "INVITE":
            return
        if response.cseq.number == call.cseq and call.reoffered is not None:
            self._reoffer_answered(call, response)
        elif response.cseq.number == call.cseq:
            self._on_invite_response(call, response)
        elif response.status_code >= 300 and self.proxy is not None:
            # a retransmitted challenge of an earlier attempt: ACK it again in its transaction
            ack = in_transaction_request(call, "ACK", response.value("To") or "",
                                         (response.branch or "", response.cseq.number))
            self.transport.send(ack, self.proxy)

    def on_request(self, request: Message, source: tuple[str, int]) -> bool:
        """A re-INVITE, UPDATE or INFO from the callee in one of our calls: a re-INVITE
        or UPDATE with SDP holds or resumes it (answered with our SDP), anything else is
        answered 200. False if the request is not for one of our calls."""
        call = self._calls.get(request.call_id)
        if call is None or request.headers["To"]["tag"] != call.local_tag:
            return False
        if call.outcome is not Outcome.ANSWERED:
            self.transport.send(build_response(request, 491, "Request Pending"), source)
            return True
        headers: list[tuple[str, str]] = [("Allow", ALLOW)]
        body = b""
        if request.method in ("INVITE", "UPDATE") and request.content:
            try:
                offer = read_offer(request)
            except SdpError:
                self.transport.send(build_response(request, 488, "Not Acceptable Here"), source)
                return True
            call.on_hold = offer.on_hold
            follow_offer(call.media, offer)
            body = call.sdp.describe(call.media.local_address, [call.media.payload_type],
                                     call.media.dtmf_payload_type, offer.answer_direction)
            local = self.transport.address
            headers += [("Contact", f"<sip:hotline@{sip_host(local[0])}:{local[1]}>"),
                        ("Content-Type", SDP)]
        data = build_response(request, 200, "OK", headers, body)
        self.transport.send(data, source)
        if request.method == "INVITE":
            self.transport.retransmit((call.call_id, "reinvite"), data, source)
        return True

    def on_ack(self, ack: Message) -> None:
        """The callee's ACK for our 200 to its re-INVITE."""
        self.transport.stop_retransmit((ack.call_id, "reinvite"))

    def on_bye(self, bye: Message, source: tuple[str, int]) -> bool:
        """End the call this BYE is for and answer 200; False if it is not for one of ours."""
        call = self._calls.get(bye.call_id)
        if call is None or bye.headers["To"]["tag"] != call.local_tag:
            return False
        self.transport.send(build_response(bye, 200, "OK"), source)
        self._end(call, Outcome.ENDED, None, "callee hung up")
        return True

    def unreachable(self, call_id: str, reason: str) -> None:
        """Fail the set-up of a call whose INVITE came back as an ICMP error (`reason`),
        unless the trunk has answered it already."""
        with self.transport.lock:
            call = self._calls.get(call_id)
            if call is None or call.outcome is not Outcome.PENDING or call.provisional:
                return
            self._stop_setup(call)
            self._end(call, Outcome.TRUNK_FAILED, None, f"ICMP: {reason}")

    def forget_ended(self, now: float, linger_s: float) -> None:
        """Drop the calls that ended more than `linger_s` ago."""
        for call_id, ended in [(i, c.ended_at) for i, c in self._calls.items()]:
            if ended is not None and now - ended > linger_s:
                del self._calls[call_id]

    def _send_invite(self, call: OutboundCall, authorization: tuple[str, str] | None) -> None:
        assert self.proxy is not None
        call.invite = build_invite(call, authorization)
        self.transport.transmit((call.call_id, "out-invite"), call.invite, self.proxy)
        self.transport.schedule((call.call_id, "provisional"), self.provisional_timeout_s,
                                lambda: self._no_provisional(call))

    def _on_invite_response(self, call: OutboundCall, response: Message) -> None:
        code = response.status_code
        self.transport.stop_retransmit((call.call_id, "out-invite"))
        self.transport.cancel((call.call_id, "provisional"))
        if code < 200:
            call.provisional = code
            if code >= 180:
                call.time_setup(self.transport.now(), "ringing")
            if take_media(call, response):
                call.early_media = True
            return
        self.transport.cancel((call.call_id, "ring"))
        if code < 300:
            self._on_success(call, response)
            return
        assert self.proxy is not None
        self.transport.send(in_transaction_request(call, "ACK", response.value("To") or ""),
                            self.proxy)
        if code in (401, 407) and not call.authenticated and self.credentials:
            authorization = digest_authorization(response, "INVITE", call.uri,
                                                 *self.credentials)
            if authorization is not None:
                call.authenticated, call.cseq, call.branch = True, call.cseq + 1, new_branch()
                self._send_invite(call, authorization)
                return
        outcome = Outcome.TRUNK_FAILED if code in TRUNK_FAILURE_STATUSES else Outcome.REFUSED
        self._end(call, outcome, code, f"{code} {response.reason}".strip())

    def _on_success(self, call: OutboundCall, response: Message) -> None:
        learn_dialog(call, response)
        take_media(call, response)
        ack, destination = in_dialog_request(call, "ACK", call.cseq)
        self.transport.send(ack, destination)  # every copy of the 2xx gets its ACK
        if call.outcome is Outcome.PENDING:
            call.time_setup(self.transport.now(), "answered")
            call.outcome, call.status, call.reason = (Outcome.ANSWERED, response.status_code,
                                                      response.reason)
            call.answered.set()
            call.finished.set()
            logger.info("Call %s to %s answered", call.call_id, call.number)
        elif call.outcome is not Outcome.ANSWERED:  # answered after we gave up
            self._send_bye(call)

    def _reoffer_answered(self, call: OutboundCall, response: Message | None) -> None:
        """A response to our re-offer (None: none came): ACK a final, follow a 2xx's
        SDP answer, and tell whoever waits."""
        if response is not None and response.status_code < 200:
            return
        self.transport.stop_retransmit((call.call_id, "reoffer"))
        done, call.reoffered = call.reoffered, None
        call.reoffer_status = None if response is None else response.status_code
        accepted = False
        if response is not None and response.status_code < 300:
            contact = uris(response.value("Contact") or "")
            if contact:
                call.remote_target = contact[0]
            ack, destination = in_dialog_request(call, "ACK", call.cseq)
            self.transport.send(ack, destination)
            try:
                answer = read_offer(response)
            except SdpError as exc:
                logger.warning("Call %s: re-offer answered without usable SDP: %s",
                               call.call_id, exc)
            else:
                call.on_hold = answer.on_hold
                follow_offer(call.media, answer)
                call.media.use_codec(answer.payload_type, answer.dtmf_payload_type)
                accepted = True
        elif response is not None and self.proxy is not None:
            self.transport.send(in_transaction_request(
                call, "ACK", response.value("To") or "",
                (response.branch or "", response.cseq.number)), self.proxy)
        if not accepted:
            logger.warning("Call %s: re-offer %s", call.call_id, "not answered" if response is None
                           else f"answered {response.status_code} {response.reason}")
        if done is not None:
            done(accepted)

    def _no_provisional(self, call: OutboundCall) -> None:
        with self.transport.lock:
            if call.provisional is None and call.outcome is Outcome.PENDING:
                self.transport.stop_retransmit((call.call_id, "out-invite"))
                self._end(call, Outcome.TRUNK_FAILED, None,
                          f"no provisional reply within {self.provisional_timeout_s:g} s")

    def _ring_timeout(self, call: OutboundCall, seconds: float) -> None:
        with self.transport.lock:
            if call.outcome is Outcome.PENDING:
                self.cancel(call, f"no answer within {seconds:g} s")

    def _stop_setup(self, call: OutboundCall) -> None:
        self.transport.stop_retransmit((call.call_id, "out-invite"))
        for kind in ("provisional", "ring"):
            self.transport.cancel((call.call_id, kind))

    def _send_bye(self, call: OutboundCall) -> None:
        bye, destination = in_dialog_request(call, "BYE", call.cseq + 1)
        self.transport.transmit((call.call_id, "bye"), bye, destination)

    def _end(self, call: OutboundCall, outcome: Outcome, status: int | None,
             reason: str) -> None:
        first_outcome = call.outcome is Outcome.PENDING
        if first_outcome:
            call.time_setup(self.transport.now(), outcome)
        if first_outcome or outcome is Outcome.ENDED:
            call.outcome, call.reason = outcome, reason
            call.status = status if status is not None else call.status
        if outcome is not Outcome.ANSWERED and not call.ended.is_set():
            call.media.close()
            call.ended_at = self.transport.now()
            call.ended.set()
            logger.info("Call %s to %s: %s (%s)", call.call_id, call.number, outcome,
                        shorten(reason))
        call.finished.set()  # last: whoever waits on it sees the call's final state
        if outcome is Outcome.TRUNK_FAILED and first_outcome and self.on_trunk_failure:
            self.on_trunk_failure(f"INVITE to {call.number}: {reason}")
