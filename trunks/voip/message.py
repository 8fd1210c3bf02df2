"""SIP messages: a strict front end for pyVoIP's parser, and request building.

pyVoIP 1.6.8 parses with plain string splits: it needs exactly ``Name: value``,
knows no compact header names, rejects OPTIONS and REGISTER requests and any
status code missing from its enum, and fails on bad input with whatever
``IndexError`` or ``UnicodeDecodeError`` the split raised. `parse_message`
first rewrites a datagram into the one shape pyVoIP handles (compact names of
any case, folded lines joined, white space around parameters removed, the body
cut to its Content-Length, only an SDP body handed to pyVoIP), lets pyVoIP parse
it, then checks what pyVoIP does not (`syntax.py`). Any bad datagram comes out
as `SipParseError`, a `ValueError`, with a sentence saying what is wrong.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVoIP.SIP import SIPMessage, SIPStatus

from trunks.voip import syntax

MAX_DATAGRAM_BYTES = 65_535
SIP_VERSION = "SIP/2.0"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
"""The methods this server's endpoints handle, for Allow headers."""
SUPPORTED = "timer"
"""The SIP extensions we support, for Supported headers: session timers (RFC 4028)."""
EXTENSIONS = frozenset({"timer"})
"""What a request's Require may name; anything else gets 420 (RFC 3261 8.2.2.3)."""
USER_AGENT = "hotline"
"""Our User-Agent and Server header value."""
SDP = "application/sdp"
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE",
           "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE")
REQUIRED_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

# RFC 3261 section 7.3.3 compact forms, and the canonical spelling pyVoIP looks up.
_COMPACT = {"i": "Call-ID", "v": "Via", "f": "From", "t": "To", "l": "Content-Length",
            "m": "Contact", "c": "Content-Type", "k": "Supported", "s": "Subject",
            "e": "Content-Encoding", "o": "Event", "u": "Allow-Events", "r": "Refer-To",
            "x": "Session-Expires"}
_CANONICAL = {name.lower(): name for name in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type",
    "Max-Forwards", "Allow", "Supported", "Accept", "User-Agent", "Server", "Expires",
    "Record-Route", "Route", "WWW-Authenticate", "Proxy-Authenticate", "Authorization",
    "Proxy-Authorization", "Retry-After", "Min-Expires", "Event", "Subject", "Date",
    "Content-Encoding", "Require", "Proxy-Require", "Unsupported", "Warning",
    "Session-Expires", "Min-SE",
)}
_MERGED = frozenset({"Record-Route", "Route"})
"""Headers that may repeat and whose every value matters (the route set)."""
_ANGLE_URI = re.compile(r"<([^>]+)>")
_BARE_URI = re.compile(r"\s*([^;,\s]+)")
_HOSTPORT = re.compile(r"^sips?:(?:[^@]+@)?(\[[^\]]+\]|[^:;>]+)(?::(\d+))?")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?$")
_METHOD = re.compile(rf"^([{syntax.TOKEN_CHARS}]+)[ \t]")
"""The start of anything that looks like a request line, to answer it 400 if it is bad."""
_REQUEST_LINE = re.compile(rf"^([{syntax.TOKEN_CHARS}]+) (\S+) SIP/([0-9]+\.[0-9]+)$")
_NAME_ADDR = frozenset({"From", "To", "Contact"})
_SINGLE = frozenset({"From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type"})
"""Headers a message may carry only once (Content-Length is checked with the body)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KNOWN_STATUS = {int(s) for s in SIPStatus}


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message.

    When the datagram is a request (other than ACK) whose Via, From, To, Call-ID
    and CSeq could still be read, `request` holds those alone, so the receiver can
    answer it with `status` and `reason` (400 Bad Request, 505 for another version).
    """

    def __init__(self, text: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(text)
        self.status, self.reason = status, reason
        self.request: Message | None = None


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str


class Message(SIPMessage):
    """pyVoIP's SIPMessage that also accepts any method, uncommon status codes and
    bodies that are not SDP."""

    status_code: int = 0
    reason: str = ""
    header_lines: tuple[tuple[str, str], ...] = ()
    """Every header as (canonical name, value), in order; pyVoIP's dict loses some."""
    content: bytes = b""
    """The body as received (only an SDP body is also parsed, into `body`)."""
    media_profiles: tuple[str, ...] = ()
    """Each SDP m= line's transport profile ("RTP/AVP", "RTP/AVPF", ...), in order."""
    raw: bytes = b""
    """The datagram as received (`parse_message`), to keep or parse again."""

    def values(self, name: str) -> list[str]:
        return [value for n, value in self.header_lines if n == name]

    def value(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every `name` header, in lower case (Require,
        Supported, Allow ...)."""
        return {token.strip().lower() for value in self.values(name)
                for token in value.split(",") if token.strip()}

    def parse(self, data: bytes) -> None:
        method = data.split(b" ", 1)[0].decode("utf-8", errors="replace")
        self.SIPCompatibleMethods = [*METHODS, method]
        super().parse(data)

    def parse_sip_response(self, data: bytes) -> None:
        # pyVoIP builds SIPStatus(code) and fails on codes its enum lacks (199, 422,
        # 580, ...). Parse the real code here and hand pyVoIP its class's base code.
        heading, rest = data.split(b"\r\n", 1)
        match = _STATUS_LINE.match(heading.decode("utf-8"))
        if match is None:
            raise SipParseError(f"bad SIP status line {shorten(heading)}")
        self.status_code, self.reason = int(match[1]), match[2] or ""
        code = self.status_code
        if code not in _KNOWN_STATUS:
            code = code // 100 * 100
        super().parse_sip_response(f"SIP/2.0 {code} {self.reason}".encode() + b"\r\n" + rest)

    @staticmethod
    def parse_raw_header(headers_raw: list[bytes], handle: Callable[[str, str], None]) -> None:
        # pyVoIP's own splits each line at every ": ", cutting values that hold one.
        headers: dict[str, Any] = {"Via": []}
        for line in headers_raw:
            name, _, value = line.decode("utf-8").partition(": ")
            if name == "Via":
                headers["Via"].append(value)
            headers.setdefault(name, value)
        for name, value in headers.items():
            handle(name, value)

    def parse_header(self, header: str, data: str) -> None:
        super().parse_header(header, data)
        if header in ("From", "To"):  # pyVoIP's tag runs on over any later parameters
            self.headers[header]["tag"] = self.headers[header]["tag"].split(";")[0]

    def parse_body(self, header: str, data: str) -> None:
        # pyVoIP fails on an rtpmap without a clock rate (a=rtpmap:31 LPC); no codec we
        # use is named that way, so such a line is skipped.
        if header == "a" and data.startswith("rtpmap:") and "/" not in data:
            return
        # pyVoIP knows three profiles and fails on the rest (RTP/AVPF, RTP/SAVPF, ...):
        # the real one is kept here, for `sdp.read_offer` to refuse, and pyVoIP is told
        # RTP/AVP.
        if header == "m" and len(fields := data.split(" ")) > 2:
            self.media_profiles = (*self.media_profiles, fields[2])
            data = " ".join([*fields[:2], "RTP/AVP", *fields[3:]])
        super().parse_body(header, data)

    @property
    def is_response(self) -> bool:
        return self.status_code != 0

    @property
    def uri(self) -> str:
        """The Request-URI of a request ("" for a response)."""
        return "" if self.is_response else self.heading.split(b" ")[1].decode("utf-8")

    @property
    def content_type(self) -> str:
        """The body's media type in lower case, without parameters ("" if none)."""
        return (self.value("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def call_id(self) -> str:
        return str(self.headers["Call-ID"])

    @property
    def cseq(self) -> CSeq:
        value: dict[str, Any] = self.headers["CSeq"]
        return CSeq(int(value["check"]), str(value["method"]))

    @property
    def branch(self) -> str | None:
        """The branch parameter of the topmost Via."""
        branch = self.headers["Via"][0].get("branch")
        return None if branch is None else str(branch)


def parse_message(data: bytes) -> Message:
    """Parse one SIP datagram; raise `SipParseError` saying what is wrong with it."""
    if not data.strip():
        raise SipParseError("empty datagram")
    if len(data) > MAX_DATAGRAM_BYTES:
        raise SipParseError(f"datagram of {len(data)} bytes is over the SIP size limit")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("SIP message is truncated: no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"SIP headers are not UTF-8 (byte {exc.start})") from exc
    start, *lines = text.split("\r\n")
    method = _METHOD.match(start)
    if method is None and not _STATUS_LINE.match(start):
        raise SipParseError(f"not a SIP request or status line: {shorten(start)}")
    headers = _normalise_headers(lines)
    try:
        if method is not None:
            _check_request_line(start)
        message = _parse(start, headers, _body(headers, body))
        message.raw = data
        return message
    except SipParseError as exc:
        if method is not None and method[1] != "ACK":
            exc.request = _answerable(method[1], headers)
        raise


def _parse(start: str, headers: list[tuple[str, str]], body: bytes) -> Message:
    content_type = next((v for n, v in headers if n == "Content-Type"), "")
    sdp = content_type.split(";")[0].strip().lower() == SDP
    if sdp and b"\r\n\r\n" in body:
        raise SipParseError("SDP body contains a blank line")
    # pyVoIP parses only an SDP body, and knows it only by this exact Content-Type.
    lines = [(n, SDP if n == "Content-Type" and sdp else v) for n, v in headers]
    raw = "\r\n".join([start, *(f"{name}: {value}" for name, value in lines)])
    try:
        message = Message(raw.encode("utf-8") + b"\r\n\r\n" + (body if sdp else b""))
    except SipParseError:
        raise
    except Exception as exc:  # pyVoIP fails with whatever its string splitting hit
        raise SipParseError(f"pyVoIP could not parse the message: {exc!r}") from exc
    message.header_lines, message.content = tuple(headers), body
    _check_required(message)
    _check_headers(message)
    return message


def _check_request_line(start: str) -> None:
    match = _REQUEST_LINE.match(start)
    if match is None:
        raise SipParseError(f"malformed request line {shorten(start)}")
    if match[3] != "2.0":
        raise SipParseError(f"SIP version {match[3]} is not supported", 505,
                            "Version Not Supported")
    try:
        syntax.check_request_uri(match[2])
    except ValueError as exc:
        raise SipParseError(str(exc)) from exc


def _normalise_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for name, value in _unfold(lines):
        name = _COMPACT.get(name.lower(), name) if len(name) == 1 else name
        name = _CANONICAL.get(name.lower(), name)
        if name == "Via":
            headers.extend((name, syntax.tidy_via(part)) for part in _split_list(value)
                           if part.strip())
        elif name in _MERGED and any(n == name for n, _ in headers):
            # pyVoIP keeps only the first line of a header: fold repeats into one list
            i = next(i for i, (n, _) in enumerate(headers) if n == name)
            headers[i] = (name, f"{headers[i][1]}, {value}")
        elif name in _NAME_ADDR:
            headers.append((name, syntax.tidy_params(value)))
        else:
            headers.append((name, value))
    return headers


def _unfold(lines: list[str]) -> list[tuple[str, str]]:
    """(name, value) of each header, continuation lines joined to theirs."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not syntax.is_token(name):
            raise SipParseError(f"malformed header line {shorten(line)}")
        headers.append((name, value.strip()))
    return headers


def _body(headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The body, cut to its Content-Length: a datagram's octets after it are not part of
    the message (RFC 3261 18.3)."""
    declared = [v for n, v in headers if n == "Content-Length"]
    if not declared:
        return body
    if len(declared) > 1:
        raise SipParseError("SIP message has more than one Content-Length")
    if not declared[0].isdigit():
        raise SipParseError(f"Content-Length is not a number: {shorten(declared[0], 20)}")
    length = int(declared[0])
    if len(body) < length:
        raise SipParseError(f"SIP message is truncated: body has {len(body)} of "
                            f"{length} bytes")
    return body[:length]


def _check_required(message: Message) -> None:
    for name in REQUIRED_HEADERS:
        if not message.headers.get(name):
            raise SipParseError(f"SIP message has no {name}")
    try:
        message.cseq  # noqa: B018 - validates the number
    except ValueError as exc:
        raise SipParseError(f"SIP message has a bad CSeq: "
                            f"{shorten(message.value('CSeq') or '')}") from exc


def _check_headers(message: Message) -> None:
    """What pyVoIP lets through: the grammar of Via, From, To, Contact and CSeq, single
    headers given twice, a request whose CSeq names another method, a Date not in GMT."""
    lines = message.header_lines
    try:
        for name, value in lines:
            if name == "Via":
                syntax.check_via(value)
            elif name in _NAME_ADDR:
                syntax.check_name_addr(name, value)
        _, method = syntax.check_cseq(message.value("CSeq") or "")
    except ValueError as exc:
        raise SipParseError(str(exc)) from exc
    for name in _SINGLE:
        if sum(n == name for n, _ in lines) > 1:
            raise SipParseError(f"SIP message has more than one {name}")
    if not message.is_response and method != message.method:
        raise SipParseError(f"CSeq method {shorten(method, 20)} is not the request's "
                            f"{shorten(message.method, 20)}")
    date = message.value("Date")
    if date is not None and not date.endswith(" GMT"):
        raise SipParseError(f"Date is not in GMT: {shorten(date, 40)}")


def _answerable(method: str, headers: list[tuple[str, str]]) -> Message | None:
    """A request's Via, From, To, Call-ID and CSeq as a Message to answer, if they parse."""
    needed = [(n, v) for n, v in headers if n in REQUIRED_HEADERS]
    raw = "\r\n".join([f"{method} sip:invalid {SIP_VERSION}",
                        *(f"{name}: {value}" for name, value in needed)])
    try:
        message = Message(raw.encode("utf-8") + b"\r\n\r\n")
        message.header_lines = tuple(needed)
        _check_required(message)
    except Exception:  # the request cannot be answered, then
        return None
    return message


def shorten(text: str | bytes, limit: int = 80) -> str:
    """Wire text made safe for a log line: control characters escaped, and at most
    `limit` characters followed by how long it was (``...(10240 bytes)``)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    size = len(text.encode("utf-8", errors="surrogatepass"))
    escaped = _CONTROL.sub(lambda m: repr(m[0])[1:-1], text[:limit])
    return escaped if len(text) <= limit else f"{escaped}...({size} bytes)"


def uris(value: str) -> list[str]:
    """The URIs of a name-addr list such as a Record-Route or Contact header value."""
    found = []
    for part in _split_list(value):
        match = _ANGLE_URI.search(part) or _BARE_URI.match(part)
        if match:
            found.append(match[1])
    return found


def _split_list(value: str) -> list[str]:
    """Split a header value on the commas outside quotes and angle brackets."""
    parts: list[str] = []
    current: list[str] = []
    quoted, depth = False, 0
    for char in value:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            depth += 1 if char == "<" else -1
        elif char == "," and not quoted and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    return [*parts, "".join(current)]


def uri_address(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """The host and port a SIP URI points at; raise SipParseError if it has none."""
    match = _HOSTPORT.match(uri)
    if match is None:
        raise SipParseError(f"not a SIP URI: {uri[:80]!r}")
    return match[1].strip("[]"), int(match[2] or default_port)


def sip_host(address: str) -> str:
    """An address as it appears in SIP: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def format_message(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A SIP message from its start line, headers (without Content-Length) and body."""
    lines = [start_line, *(f"{name}: {value}" for name, value in headers),
             f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def build_response(request: Message, code: int, reason: str,
                   headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                   to_tag: str | None = None) -> bytes:
    """A response to `request`: its Via, From, Call-ID and CSeq, its To with a tag
    (except on 100), then `headers` (Content-Type and Record-Route only on 2xx).

    A request without a To tag gets `to_tag`, or, for a response sent without a dialog
    (a refusal), `stateless_tag`: the same for every retransmission of the request, as
    RFC 3261 8.2.6.2 needs for the peer to match its ACK to our final response."""
    to = request.value("To") or ""
    if code > 100 and ";tag=" not in to:
        to = f"{to};tag={to_tag or stateless_tag(request)}"
    lines = [*(("Via", v) for v in request.values("Via")), ("From", request.value("From")
             or ""), ("To", to), ("Call-ID", request.call_id),
             ("CSeq", request.value("CSeq") or ""), ("Server", USER_AGENT), *(headers or [])]
    if code < 200 or code >= 300:
        lines = [line for line in lines if line[0] not in ("Content-Type", "Record-Route")]
    return format_message(f"{SIP_VERSION} {code} {reason}", lines, body)


def warning(text: str) -> tuple[str, str]:
    """A Warning header (RFC 3261 20.43) saying in words why we refused: code 399."""
    return ("Warning", f'399 {USER_AGENT} "{shorten(text.replace(chr(34), chr(39)), 120)}"')


def stateless_tag(request: Message) -> str:
    """A To tag derived from what identifies `request` (Call-ID, From tag, CSeq, the top
    Via's branch), so each retransmission of it is answered with the same tag."""
    key = "\n".join((request.call_id, request.headers["From"].get("tag") or "",
                     request.value("CSeq") or "", request.branch or ""))
    return hashlib.blake2s(key.encode(), digest_size=8).hexdigest()


def build_request(method: str, uri: str, *, local: tuple[str, int], call_id: str, cseq: int,
                  branch: str, from_uri: str, from_tag: str, to_uri: str,
                  user_agent: str, extra: dict[str, str] | None = None) -> bytes:
    """Build a body-less SIP request over UDP from our socket's address `local`."""
    return format_message(f"{method} {uri} {SIP_VERSION}", [
        ("Via", via(local, branch)),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={from_tag}"),
        ("To", f"<{to_uri}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("User-Agent", user_agent),
        *(extra or {}).items(),
    ])


def via(local: tuple[str, int], branch: str) -> str:
    """Our Via header value over UDP, asking for rport."""
    return f"{SIP_VERSION}/UDP {sip_host(local[0])}:{local[1]};branch={branch};rport"
