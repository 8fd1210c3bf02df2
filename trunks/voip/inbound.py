"""A call from the carrier: the UAS side of RFC 3261's dialog, for one call.

The `Answerer` (`answerer.py`) starts an `InboundCall` for each INVITE it accepts; the
application's thread for the call decides the answer through the call's methods
(`ring`, `answer`, `reject`, `hangup`), which are safe to use from it:

- a 200 is retransmitted from T1 doubling to T2 until its ACK arrives, and the
  call is hung up with BYE (cut off) if none comes within 64 * T1;
- CANCEL gets 200 and the pending INVITE 487; BYE gets 200; a re-INVITE or an UPDATE
  (hold, resume, session refresh) gets 200, with our SDP if it offered one; INFO with
  a key press gets 200 and the key joins the call's digits; CANCEL or BYE outside a
  known dialog gets 481;
- session timers (RFC 4028, `session_timer.py`): when we are the refresher we send
  UPDATE (or re-INVITE to a peer that allows no UPDATE) every half interval; a call
  whose refresher stops refreshing, or whose refresh is answered 408 or 481, is ended
  with BYE as cut off;
- an answered call from which no audio or DTMF arrives for `media_timeout_s`, while
  not on hold, is ended with BYE as cut off (the media watchdog);
- `leg_state` gives the dialog as another process needs it to take the call up, and a
  call taken up so (`Answerer.take_up`) moves the caller's media to us with `reoffer`.

Every response goes back to the address the request came from.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trunks.voip.info_dtmf import ACCEPTED, InfoError, info_digit
from trunks.voip.leg_state import INBOUND, LegState
from trunks.voip.media import RtpStream
from trunks.voip.message import (
    ALLOW,
    SDP,
    SIP_VERSION,
    SUPPORTED,
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
    warning,
)
from trunks.voip.sdp import MediaOffer, SdpError, SdpSession, follow_offer, read_offer
from trunks.voip.session_timer import MIN_SE_S, IntervalTooSmall, SessionTimer, negotiate
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
    timer: SessionTimer | None = None
    """The session timer agreed on (RFC 4028), if any."""
    min_se_s: int = MIN_SE_S
    trunk: str = ""
    """The trunk the call came in on."""
    _cseq: int = 0
    _info_cseq: int = -1
    _reoffered: Callable[[bool], None] | None = None
    """Told whether our re-INVITE (`reoffer`) was answered 2xx with SDP."""
    reoffer_status: int | None = None
    """The final status our re-offer got (None: none yet, or no answer at all)."""

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
        body = self._describe(self.offer.answer_direction)
        transport = self.transport
        with transport.lock:
            data = self._respond(200, "OK", self._dialog_headers(), body)
            if not data:
                return
            self.state, self.answered_at = CallState.ANSWERED, self.wallclock()
            transport.retransmit((self.id, "invite"), data, self.source,
                                 on_give_up=self._no_ack)
            self._arm_timer()
            self.watch_media()

    def watch_media(self) -> None:
        """Start the media watchdog (if the call has a media timeout), from now."""
        if self.media_timeout_s is not None:
            self.media.last_heard = time.monotonic()
            self.transport.schedule((self.id, "media"), MEDIA_CHECK_S, self._check_media)

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

    def drop(self, reason: str) -> None:
        """End the call here without a BYE: the caller has no such dialog (it answered
        481; its BYE went to a node that died)."""
        with self.transport.lock:
            self.transport.stop_retransmit((self.id, "invite"))
            self.transport.stop_retransmit((self.id, "refresh"))
            self._end(reason)

    def leg_state(self) -> LegState:
        """The call's dialog as it stands, for another process to take it up."""
        with self.transport.lock:
            return LegState(INBOUND, self.trunk, self.id, self.local_tag, self._cseq,
                            self.sdp.id, self.sdp.version or self.sdp.id,
                            self.media.payload_type, self.offer.dtmf_payload_type,
                            self.on_hold, invite=self.invite.raw.decode("utf-8", "replace"),
                            source=self.source)

    def reoffer(self, done: Callable[[bool], None]) -> None:
        """Offer our media as it stands in a re-INVITE with our Contact (the call was
        taken up by this process); `done` is told, from the endpoint's loop, whether the
        caller accepted it (a 2xx with an SDP answer we follow)."""
        with self.transport.lock:
            self._reoffered = done
            self._cseq += 1
            headers = [("Contact", self._contact()), ("Allow", ALLOW), ("Supported", SUPPORTED),
                       ("Content-Type", SDP)]
            data, destination = self._request("INVITE", headers, self._describe("sendrecv"))
            self.transport.transmit((self.id, "refresh"), data, destination,
                                    on_give_up=lambda: self._reoffer_answered(None))

    # Requests in the call's dialog, from the endpoint's loop.

    def on_ack(self) -> None:
        self.transport.stop_retransmit((self.id, "invite"))

    def on_reinvite(self, invite: Message, source: tuple[str, int]) -> None:
        """Answer a re-INVITE (hold, resume, session refresh) with our SDP, or 488."""
        data = self._answer_offer(invite, source)
        if data:
            self.transport.retransmit((self.id, "invite"), data, source)

    def on_update(self, update: Message, source: tuple[str, int]) -> None:
        """Answer an UPDATE (RFC 3311): a session refresh, or an offer like a re-INVITE's."""
        self._answer_offer(update, source)

    def on_info(self, info: Message, source: tuple[str, int]) -> None:
        """A key press sent as INFO joins the call's digits, once per CSeq."""
        try:
            digit = info_digit(info)
        except InfoError as exc:
            headers = [("Accept", ACCEPTED)] if exc.status == 415 else []
            self._reply(info, source, exc.status, exc.reason, headers)
            return
        self._reply(info, source, 200, "OK")
        if digit is not None and info.cseq.number != self._info_cseq:
            self._info_cseq = info.cseq.number
            self.media.receive_digit(digit)

    def on_response(self, response: Message) -> None:
        """A response to our session refresh, or to our re-offer."""
        if response.cseq.number != self._cseq or response.status_code < 200:
            return
        self.transport.stop_retransmit((self.id, "refresh"))
        if response.cseq.method == "INVITE" and response.status_code < 300:
            data, destination = self._request("ACK", cseq=response.cseq.number)
            self.transport.send(data, destination)
        if response.cseq.method == "INVITE" and self._reoffered is not None:
            self._reoffer_answered(response)
        elif response.status_code < 300:
            self._arm_timer()
        elif response.status_code in (408, 481):
            self._lost_session(f"session refresh answered {response.status_code}")

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

    # Private: offers, hold, session timers, responses, requests.

    def _reoffer_answered(self, response: Message | None) -> None:
        """Our re-offer was answered (`response`) or never (None): follow the answer's
        media and hold, and tell whoever waits."""
        done, self._reoffered = self._reoffered, None
        self.reoffer_status = None if response is None else response.status_code
        accepted = response is not None and response.status_code < 300
        if accepted and response is not None:
            try:
                self._hold(read_offer(response))
            except SdpError as exc:
                logger.warning("Call %s: re-offer answered without usable SDP: %s",
                               shorten(self.id), exc)
                accepted = False
        if response is None:
            logger.warning("Call %s: no answer to our re-offer", shorten(self.id))
        elif not accepted:
            logger.warning("Call %s: re-offer answered %d %s", shorten(self.id),
                           response.status_code, response.reason)
        if done is not None:
            done(accepted)

    def _answer_offer(self, request: Message, source: tuple[str, int]) -> bytes:
        """Answer a re-INVITE or UPDATE: its SDP offer, if any, and its session timer;
        return what was sent if it was a 200."""
        try:
            timer = negotiate(request, self.min_se_s)
            offer = read_offer(request) if request.content else None
        except IntervalTooSmall as exc:
            self._reply(request, source, 422, "Session Interval Too Small",
                        [("Min-SE", str(exc.min_se))], to_tag=self.local_tag)
            return b""
        except SdpError as exc:
            self._reply(request, source, 488, "Not Acceptable Here", [warning(str(exc))],
                        to_tag=self.local_tag)
            return b""
        except ValueError:
            self._reply(request, source, 400, "Bad Request", to_tag=self.local_tag)
            return b""
        direction = "sendrecv"
        if offer is not None:
            self._hold(offer)
            direction = offer.answer_direction
        elif request.method == "INVITE":  # an offerless re-INVITE: we offer, as we stand
            direction = "sendonly" if self.on_hold else "sendrecv"
        self.timer = timer
        headers = self._dialog_headers()
        body = b""
        if offer is not None or request.method == "INVITE":
            body = self._describe(direction)
        else:
            headers = [h for h in headers if h[0] != "Content-Type"]
        data = self._reply(request, source, 200, "OK", headers, body, to_tag=self.local_tag)
        self._arm_timer()
        return data

    def _arm_timer(self) -> None:
        """(Re)start the session timer after a refresh, or stop it if none is agreed."""
        transport, timer = self.transport, self.timer
        if timer is None or self.state is not CallState.ANSWERED:
            transport.cancel((self.id, "session-refresh"))
            transport.cancel((self.id, "session-expiry"))
            return
        if timer.we_refresh:
            transport.schedule((self.id, "session-refresh"), timer.refresh_after_s,
                               self._refresh)
        transport.schedule((self.id, "session-expiry"), timer.expire_after_s,
                           lambda: self._lost_session(
                               f"no session refresh within {timer.interval_s} s"))

    def _refresh(self) -> None:
        """Send our session refresh: UPDATE, or re-INVITE with our SDP as it stands to a
        peer that does not allow UPDATE."""
        with self.transport.lock:
            if self.state is not CallState.ANSWERED or self.timer is None:
                return
            method = "UPDATE" if "update" in self.invite.tokens("Allow") else "INVITE"
            self._cseq += 1
            headers = [("Contact", self._contact()), ("Supported", SUPPORTED),
                       *self.timer.headers()]
            body = b""
            if method == "INVITE":
                body = self._describe("sendonly" if self.on_hold else "sendrecv")
                headers.append(("Content-Type", SDP))
            data, destination = self._request(method, headers, body)
            self.transport.transmit((self.id, "refresh"), data, destination,
                                    on_give_up=lambda: self._lost_session(
                                        "no answer to our session refresh"))

    def _lost_session(self, why: str) -> None:
        with self.transport.lock:
            if self.state is not CallState.ANSWERED:
                return
            logger.warning("Call %s: %s; ending it", shorten(self.id), why)
            self._send_bye()
            self._end(f"{CUT_OFF}: {why}")

    def _hold(self, offer: MediaOffer) -> None:
        """Follow an offer's hold or resume, and its media: nothing is sent while held
        (RFC 3264 6.1); the call's flow sees `on_hold` and waits."""
        if offer.on_hold != self.on_hold:
            logger.info("Call %s %s", shorten(self.id), "held" if offer.on_hold else "resumed")
        self.on_hold = offer.on_hold
        follow_offer(self.media, offer)

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
        timer = self.timer.headers() if self.timer is not None else []
        return [*(("Record-Route", rr) for rr in self.invite.values("Record-Route")),
                ("Contact", self._contact()), ("Allow", ALLOW), ("Supported", SUPPORTED),
                *timer, ("Content-Type", SDP)]

    def _describe(self, direction: str) -> bytes:
        """Our SDP as it stands, for an answer or our refresh's offer."""
        return self.sdp.describe(self.media.local_address, [self.offer.payload_type],
                                 self.offer.dtmf_payload_type, direction,
                                 rtcp_mux=self.media.rtcp.mux)

    def _contact(self) -> str:
        host, port = self.transport.address
        return f"<sip:hotline@{host}:{port}>"

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
        """BYE along the caller's route set; stop retransmitting our 200 and refreshes."""
        self._cseq += 1
        data, destination = self._request("BYE")
        self.transport.transmit((self.id, "bye"), data, destination)
        self.transport.stop_retransmit((self.id, "invite"))
        self.transport.stop_retransmit((self.id, "refresh"))

    def _request(self, method: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", cseq: int | None = None) -> tuple[bytes, tuple[str, int]]:
        """A request of ours in the call's dialog (CSeq `cseq`, default the latest), and
        where it goes: along the caller's route set to its Contact."""
        route = uris(", ".join(self.invite.values("Record-Route")))
        contact = uris(self.invite.value("Contact") or "")
        target = contact[0] if contact else f"sip:{self.source[0]}:{self.source[1]}"
        to = self.invite.value("To") or ""
        data = format_message(f"{method} {target} {SIP_VERSION}", [
            ("Via", via(self.transport.address, new_branch())), ("Max-Forwards", "70"),
            *([("Route", ", ".join(f"<{r}>" for r in route))] if route else []),
            ("From", f"{to};tag={self.local_tag}" if ";tag=" not in to else to),
            ("To", self.invite.value("From") or ""), ("Call-ID", self.id),
            ("CSeq", f"{self._cseq if cseq is None else cseq} {method}"),
            ("User-Agent", USER_AGENT), *(headers or [])], body)
        try:
            destination = uri_address(route[0] if route else target)
        except SipParseError:
            destination = self.source
        return data, destination

    def _end(self, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state, self.end_reason = CallState.ENDED, reason
        self.ended_at = self.transport.now()
        self.transport.cancel((self.id, "session-refresh"))
        self.transport.cancel((self.id, "session-expiry"))
        self.media.close()
        self.ended.set()
        logger.info("Call %s ended: %s", shorten(self.id), reason)
