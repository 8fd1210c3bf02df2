"""A scriptable SIP caller on loopback, for what sipp scenarios say poorly: exact timing
of re-INVITEs, INFO and UPDATE in a live call, RTP counted packet by packet, and every
dialog of a forked INVITE.

`SipCaller` speaks plain UDP SIP through `trunks.voip.message` (the parser under test
elsewhere); `ForkedCaller` calls through a record-routing proxy that may fork, keeping
each 200 as a dialog of its own; `RtpCounter` receives a call's RTP on its own port and
counts what came when. `registrar_bindings` asks a registrar which contacts an AOR has.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from trunks.voip.auth import digest_authorization
from trunks.voip.message import (
    Message,
    format_message,
    new_branch,
    new_tag,
    parse_message,
    uris,
    via,
)
from trunks.voip.sdp import build_sdp

RECV_TIMEOUT_S = 5.0


@dataclass
class RtpCounter:
    """Receives RTP on a loopback port and keeps each packet's arrival time and bytes."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET,
                                                                      socket.SOCK_DGRAM))
    arrivals: list[tuple[float, bytes, tuple[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def count(self, since: float, until: float = float("inf")) -> int:
        return sum(1 for at, _, _ in list(self.arrivals) if since <= at < until)

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        self.sock.sendto(data, destination)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.arrivals.append((time.monotonic(), data, source))


class SipCaller:
    """One caller's dialog with an endpoint: INVITE, ACK, re-INVITE, INFO, UPDATE, BYE."""

    def __init__(self, target: tuple[str, int], rtp_port: int, call_id: str,
                 payload_types: tuple[int, ...] = (0,), dtmf: int | None = 101,
                 caller: str = "caller") -> None:
        """`caller`: the user part of our From, the caller ID the endpoint sees."""
        self.target = target
        self.caller = caller
        self.rtp_port = rtp_port
        self.call_id = call_id
        self.payload_types = list(payload_types)
        self.dtmf = dtmf
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(RECV_TIMEOUT_S)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.cseq = 0
        self.to = "<sip:400@hotline>"
        """The To header as the dialog knows it (with the endpoint's tag once answered)."""
        self.requests: list[Message] = []
        """Requests the endpoint sent us (BYE, re-INVITE, UPDATE), in order."""

    def close(self) -> None:
        self.sock.close()

    def sdp(self, direction: str = "sendrecv", profile: str = "RTP/AVP") -> bytes:
        body = build_sdp(("127.0.0.1", self.rtp_port), self.payload_types, self.dtmf, direction)
        return body.replace(b" RTP/AVP ", f" {profile} ".encode())

    def request(self, method: str, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", content_type: str = "application/sdp") -> None:
        if method != "ACK":
            self.cseq += 1
        host, port = self.address
        lines = [("Via", via(self.address, new_branch())),
                 ("From", f"<sip:{self.caller}@{host}>;tag=caller-{self.call_id}"),
                 ("To", self.to),
                 ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} {method}"),
                 ("Contact", f"<sip:caller@{host}:{port}>"), ("Max-Forwards", "70"),
                 *(headers or []), *([("Content-Type", content_type)] if body else [])]
        self.sock.sendto(format_message(f"{method} sip:400@hotline SIP/2.0", lines, body),
                         self.target)

    def final(self, method: str) -> Message:
        """The next final response to `method`, answering requests met on the way."""
        while True:
            message = self.receive()
            if message.is_response and message.cseq.method == method \
                    and message.status_code >= 200:
                return message

    def receive(self) -> Message:
        """The next message; requests from the endpoint are kept and answered 200."""
        message = parse_message(self.sock.recv(65535))
        if not message.is_response:
            self.requests.append(message)
            if message.method != "ACK":
                expires = message.value("Session-Expires")
                self.reply(message, 200, "OK",
                           [("Session-Expires", expires)] if expires else [])
        return message

    def reply(self, request: Message, code: int, reason: str,
              headers: list[tuple[str, str]] | None = None) -> None:
        lines = [(name, value) for name, value in request.header_lines
                 if name in ("Via", "From", "To", "Call-ID", "CSeq")]
        self.sock.sendto(format_message(f"SIP/2.0 {code} {reason}", lines + (headers or [])),
                         self.target)

    def call(self, headers: list[tuple[str, str]] | None = None) -> Message:
        """INVITE and ACK; return the 200."""
        self.request("INVITE", headers, self.sdp())
        ok = self.final("INVITE")
        assert ok.status_code == 200, f"{ok.status_code} {ok.reason}"
        self.to = ok.value("To") or ""
        self.ack()
        return ok

    def ack(self) -> None:
        self.request("ACK")

    def reinvite(self, direction: str) -> Message:
        self.request("INVITE", body=self.sdp(direction))
        ok = self.final("INVITE")
        if ok.status_code == 200:
            self.ack()
        return ok

    def hang_up(self) -> Message:
        self.request("BYE")
        return self.final("BYE")

    def wait_request(self, method: str, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                message = self.receive()
            except TimeoutError:
                break
            finally:
                self.sock.settimeout(RECV_TIMEOUT_S)
            if not message.is_response and message.method == method:
                return message
        raise AssertionError(f"no {method} from the endpoint within {timeout:g} s")


class ForkedCaller(SipCaller):
    """A caller through a record-routing proxy (`target`) that may fork its INVITE to
    `uri`: each 200 that comes back is a dialog of its own (RFC 3261 13.2.2.4), ACKed at
    once and hung up by `hang_up_all`, each along its own route set."""

    def __init__(self, target: tuple[str, int], rtp_port: int, call_id: str, uri: str) -> None:
        super().__init__(target, rtp_port, call_id)
        self.uri = uri
        self.to = f"<{uri}>"
        self.dialogs: dict[str, Message] = {}
        """Each dialog's 200 by its To tag, in the order they came."""
        self.finals: list[Message] = []
        """Every final response to the INVITE (one per dialog or failure, not repeats)."""
        self.answered_at: float | None = None
        """When the first 200 came (monotonic)."""
        self._invite_branch = ""

    def invite(self) -> float:
        """Send the INVITE; return when (monotonic)."""
        self._invite_branch = new_branch()
        self.cseq += 1
        self._send("INVITE", self.uri, self.to, self.cseq, [], self.sdp(),
                   self._invite_branch)
        return time.monotonic()

    def answers(self, window_s: float) -> list[Message]:
        """The final responses to the INVITE, waiting until `window_s` after the first
        (up to RECV_TIMEOUT_S for that one); each 200 is ACKed as it comes."""
        deadline: float | None = None
        while deadline is None or (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(RECV_TIMEOUT_S if deadline is None else left)
            try:
                message = self.receive()
            except TimeoutError:
                if deadline is None:
                    raise
                break
            finally:
                self.sock.settimeout(RECV_TIMEOUT_S)
            if message.is_response and message.cseq.method == "INVITE" \
                    and message.status_code >= 200:
                deadline = deadline or time.monotonic() + window_s
                self._final(message)
        return self.finals

    def hang_up_all(self) -> list[int]:
        """BYE every dialog; the status of each BYE's answer, in order."""
        statuses = []
        for tag, ok in self.dialogs.items():
            self.cseq += 1
            self._in_dialog("BYE", ok, self.cseq)
            while True:
                answer = self.final("BYE")
                if answer.headers["To"]["tag"] == tag:
                    statuses.append(answer.status_code)
                    break
        return statuses

    def _final(self, response: Message) -> None:
        tag = response.headers["To"]["tag"]
        if response.status_code >= 300:  # the proxy's failure: ACKed hop by hop
            if not any(f.headers["To"]["tag"] == tag for f in self.finals):
                self.finals.append(response)
            self._send("ACK", self.uri, response.value("To") or "", self.cseq, [], b"",
                       self._invite_branch)
            return
        if tag not in self.dialogs:
            self.answered_at = self.answered_at or time.monotonic()
            self.dialogs[tag] = response
            self.finals.append(response)
        self._in_dialog("ACK", response, response.cseq.number)

    def _in_dialog(self, method: str, ok: Message, cseq: int) -> None:
        """A request in the dialog `ok` set up: to its Contact, along its route set (the
        Record-Route reversed), through the proxy."""
        route = list(reversed(uris(", ".join(ok.values("Record-Route")))))
        target = uris(ok.value("Contact") or "")[0]
        self._send(method, target, ok.value("To") or "", cseq, route, b"", new_branch())

    def _send(self, method: str, uri: str, to: str, cseq: int, route: list[str],
              body: bytes, branch: str) -> None:
        host, port = self.address
        lines = [("Via", via(self.address, branch)), ("Max-Forwards", "70"),
                 *([("Route", ", ".join(f"<{r}>" for r in route))] if route else []),
                 ("From", f"<sip:{self.caller}@{host}>;tag=caller-{self.call_id}"),
                 ("To", to), ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}"),
                 ("Contact", f"<sip:caller@{host}:{port}>"),
                 *([("Content-Type", "application/sdp")] if body else [])]
        self.sock.sendto(format_message(f"{method} {uri} SIP/2.0", lines, body), self.target)


def registrar_bindings(registrar: tuple[str, int], user: str, password: str) -> list[str]:
    """The contacts a registrar holds for sip:`user`@(its host), asked by a REGISTER
    without Contact (RFC 3261 10.2.3), answering one digest challenge."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(RECV_TIMEOUT_S)
        local = sock.getsockname()[:2]
        aor, call_id, tag = f"sip:{user}@{registrar[0]}", f"bindings-{new_tag()}", new_tag()
        authorization: list[tuple[str, str]] = []
        for cseq in (1, 2):
            sock.sendto(format_message(f"REGISTER sip:{registrar[0]} SIP/2.0", [
                ("Via", via(local, new_branch())), ("Max-Forwards", "70"),
                ("From", f"<{aor}>;tag={tag}"), ("To", f"<{aor}>"), ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"), *authorization]), registrar)
            response = parse_message(sock.recv(65535))
            if response.status_code not in (401, 407):
                break
            answer = digest_authorization(response, "REGISTER", f"sip:{registrar[0]}", user,
                                          password)
            authorization = [answer] if answer else []
    assert response.status_code == 200, f"{response.status_code} {response.reason}"
    return [uri for value in response.values("Contact") for uri in uris(value)]


@contextmanager
def sip_caller(target: tuple[str, int], call_id: str, **options: object) -> Iterator[
        tuple[SipCaller, RtpCounter]]:
    """A caller and its RTP port, closed afterwards."""
    rtp = RtpCounter()
    caller = SipCaller(target, rtp.port, call_id, **options)  # type: ignore[arg-type]
    try:
        yield caller, rtp
    finally:
        caller.close()
        rtp.close()
