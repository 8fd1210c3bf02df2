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
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Histogram

from trunks.voip.media import RtpStream
from trunks.voip.message import (
    ALLOW,
    SIP_VERSION,
    Message,
    SipParseError,
    format_message,
    new_branch,
    new_call_id,
    new_tag,
    sip_host,
    uri_address,
    uris,
    via,
)
from trunks.voip.sdp import SdpError, build_offer, read_offer

if TYPE_CHECKING:
    from trunks.voip.endpoint import SipEndpoint

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

    endpoint: SipEndpoint
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

    def __post_init__(self) -> None:
        if not self.call_id:
            self.call_id = new_call_id(self.endpoint.address[0])

    @property
    def from_header(self) -> str:
        """Our From header value, the same in every request of the call."""
        host = sip_host(self.endpoint.address[0])
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
            SETUP_SECONDS.labels(self.endpoint.name, result.replace(" ", "_")).observe(
                now - self.invited_at)

    def wait(self, timeout: float | None = None) -> Outcome:
        """Wait for the set-up to finish; return the outcome (PENDING on timeout)."""
        self.finished.wait(timeout)
        return self.outcome

    def cancel(self) -> None:
        """Give up on a call that has not been answered."""
        self.endpoint._cancel_outbound(self)

    def hangup(self) -> None:
        """BYE if answered, CANCEL if still ringing."""
        self.endpoint._hangup_outbound(self)


def build_invite(call: OutboundCall, authorization: tuple[str, str] | None = None) -> bytes:
    """The INVITE (or its authenticated retry) for `call`; it goes to the trunk's proxy."""
    local = call.endpoint.address
    headers = [("Via", via(local, call.branch)), ("Max-Forwards", "70"),
               ("From", call.from_header), ("To", f"<{call.uri}>"), ("Call-ID", call.call_id),
               ("CSeq", f"{call.cseq} INVITE"),
               ("Contact", f"<sip:hotline@{sip_host(local[0])}:{local[1]}>"), ("Allow", ALLOW),
               ("Content-Type", "application/sdp"), ("User-Agent", "hotline")]
    if authorization is not None:
        headers.append(authorization)
    return format_message(f"INVITE {call.uri} {SIP_VERSION}", headers,
                          build_offer(call.media.local_address))


def in_transaction_request(call: OutboundCall, method: str, to: str,
                           transaction: tuple[str, int] | None = None) -> bytes:
    """ACK for a non-2xx final, or CANCEL: same branch and CSeq number as the INVITE
    (the current one, or the earlier `transaction` given as (branch, CSeq number))."""
    branch, cseq = transaction or (call.branch, call.cseq)
    return format_message(f"{method} {call.uri} {SIP_VERSION}", [
        ("Via", via(call.endpoint.address, branch)), ("Max-Forwards", "70"),
        ("From", call.from_header), ("To", to),
        ("Call-ID", call.call_id), ("CSeq", f"{cseq} {method}")])


def in_dialog_request(call: OutboundCall, method: str, cseq: int) -> tuple[bytes,
                                                                           tuple[str, int]]:
    """ACK for a 2xx or BYE: new branch, along the route set to the remote target."""
    headers = [("Via", via(call.endpoint.address, new_branch())), ("Max-Forwards", "70")]
    if call.route:
        headers.append(("Route", ", ".join(f"<{r}>" for r in call.route)))
    headers += [("From", call.from_header),
                ("To", f"<{call.uri}>;tag={call.remote_tag}"), ("Call-ID", call.call_id),
                ("CSeq", f"{cseq} {method}")]
    target = call.remote_target or call.uri
    data = format_message(f"{method} {target} {SIP_VERSION}", headers)
    try:
        destination = uri_address(call.route[0] if call.route else target)
    except SipParseError:
        destination = call.endpoint.proxy or call.endpoint.address
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
    call.media.remote = (offer.address, offer.port)
    call.media.use_codec(offer.payload_type, offer.dtmf_payload_type)
    return True


def digest_authorization(response: Message, method: str, uri: str, username: str,
                         password: str) -> tuple[str, str] | None:
    """The (Proxy-)Authorization header answering a 401/407 challenge (RFC 2617, MD5)."""
    name = "Proxy-Authenticate" if response.status_code == 407 else "WWW-Authenticate"
    challenge = response.value(name)
    if challenge is None or not challenge.lower().startswith("digest"):
        return None
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[6:]))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1, ha2 = md5(f"{username}:{realm}:{password}"), md5(f"{method}:{uri}")
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
              'algorithm=MD5']
    if "auth" in params.get("qop", "").split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        digest = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{digest}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    header = "Proxy-Authorization" if response.status_code == 407 else "Authorization"
    return header, "Digest " + ", ".join(fields)
