"""SIP messages: a strict front end for pyVoIP's parser, and request building.

pyVoIP 1.6.8 parses with plain string splits: it needs exactly ``Name: value``,
knows no compact header names, rejects OPTIONS and REGISTER requests and any
status code missing from its enum, and fails on bad input with whatever
``IndexError`` or ``UnicodeDecodeError`` the split raised. `parse_message`
first rewrites a datagram into the one shape pyVoIP handles, lets pyVoIP parse
it, then checks the headers every transaction needs. Any bad datagram comes out
as `SipParseError`, a `ValueError`, with a sentence saying what is wrong.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from pyVoIP.SIP import SIPMessage, SIPStatus

MAX_DATAGRAM_BYTES = 65_535
SIP_VERSION = "SIP/2.0"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
"""The methods this server's endpoints handle, for Allow headers."""
USER_AGENT = "hotline"
"""Our User-Agent and Server header value."""
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE",
           "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE")
REQUIRED_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

# RFC 3261 section 7.3.3 compact forms, and the canonical spelling pyVoIP looks up.
_COMPACT = {"i": "Call-ID", "v": "Via", "f": "From", "t": "To", "l": "Content-Length",
            "m": "Contact", "c": "Content-Type", "k": "Supported", "s": "Subject",
            "e": "Content-Encoding", "o": "Event", "u": "Allow-Events", "r": "Refer-To"}
_CANONICAL = {name.lower(): name for name in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type",
    "Max-Forwards", "Allow", "Supported", "Accept", "User-Agent", "Server", "Expires",
    "Record-Route", "Route", "WWW-Authenticate", "Proxy-Authenticate", "Authorization",
    "Proxy-Authorization", "Retry-After", "Min-Expires", "Event", "Subject",
)}
_MERGED = frozenset({"Record-Route", "Route"})
"""Headers that may repeat and whose every value matters (the route set)."""
_ANGLE_URI = re.compile(r"<([^>]+)>")
_BARE_URI = re.compile(r"\s*([^;,\s]+)")
_HOSTPORT = re.compile(r"^sips?:(?:[^@]+@)?(\[[^\]]+\]|[^:;>]+)(?::(\d+))?")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) ?(.*)$")
_REQUEST_LINE = re.compile(r"^([A-Z]+) (\S+) SIP/2\.0$")
_KNOWN_STATUS = {int(s) for s in SIPStatus}


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message."""


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str


class Message(SIPMessage):
    """pyVoIP's SIPMessage that also accepts OPTIONS, REGISTER and uncommon status codes."""

    status_code: int = 0
    reason: str = ""
    header_lines: tuple[tuple[str, str], ...] = ()
    """Every header as (canonical name, value), in order; pyVoIP's dict loses some."""

    def values(self, name: str) -> list[str]:
        return [value for n, value in self.header_lines if n == name]

    def value(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    def parse(self, data: bytes) -> None:
        self.SIPCompatibleMethods = list(METHODS)
        super().parse(data)

    def parse_sip_response(self, data: bytes) -> None:
        # pyVoIP builds SIPStatus(code) and fails on codes its enum lacks (199, 422,
        # 580, ...). Parse the real code here and hand pyVoIP its class's base code.
        heading, rest = data.split(b"\r\n", 1)
        match = _STATUS_LINE.match(heading.decode("utf-8"))
        if match is None:
            raise SipParseError(f"bad SIP status line {heading[:80]!r}")
        self.status_code, self.reason = int(match[1]), match[2]
        code = self.status_code
        if code not in _KNOWN_STATUS:
            code = code // 100 * 100
        super().parse_sip_response(f"SIP/2.0 {code} {match[2]}".encode() + b"\r\n" + rest)

    @property
    def is_response(self) -> bool:
        return self.status_code != 0

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
    if not (_STATUS_LINE.match(start) or _REQUEST_LINE.match(start)):
        raise SipParseError(f"not a SIP request or status line: {start[:80]!r}")
    headers = _normalise_headers(lines)
    _check_body(headers, body)
    raw = "\r\n".join([start, *(f"{name}: {value}" for name, value in headers)])
    try:
        message = Message(raw.encode("utf-8") + b"\r\n\r\n" + body)
    except SipParseError:
        raise
    except Exception as exc:  # pyVoIP fails with whatever its string splitting hit
        raise SipParseError(f"pyVoIP could not parse the message: {exc!r}") from exc
    message.header_lines = tuple(headers)
    _check_required(message)
    return message


def _normalise_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"malformed header line {line[:80]!r}")
        name = _COMPACT.get(name, _CANONICAL.get(name.lower(), name))
        if name == "Via":
            headers.extend((name, part.strip()) for part in value.split(",") if part.strip())
        elif name in _MERGED and any(n == name for n, _ in headers):
            # pyVoIP keeps only the first line of a header: fold repeats into one list
            i = next(i for i, (n, _) in enumerate(headers) if n == name)
            headers[i] = (name, f"{headers[i][1]}, {value.strip()}")
        else:
            headers.append((name, value.strip()))
    return headers


def _check_body(headers: list[tuple[str, str]], body: bytes) -> None:
    declared = next((v for n, v in headers if n == "Content-Length"), None)
    if declared is None:
        return
    if not declared.isdigit():
        raise SipParseError(f"Content-Length is not a number: {declared[:20]!r}")
    if len(body) < int(declared):
        raise SipParseError(f"SIP message is truncated: body has {len(body)} of "
                            f"{declared} bytes")
    if b"\r\n\r\n" in body:
        raise SipParseError("SIP body contains a blank line, which pyVoIP cannot parse")


def _check_required(message: Message) -> None:
    for name in REQUIRED_HEADERS:
        if not message.headers.get(name):
            raise SipParseError(f"SIP message has no {name}")
    try:
        message.cseq  # noqa: B018 - validates the number
    except ValueError as exc:
        raise SipParseError(f"SIP message has a bad CSeq: {message.headers['CSeq']}") from exc


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
    """A response to `request`: its Via, From, Call-ID and CSeq, its To with `to_tag`
    added (except on 100), then `headers` (Content-Type and Record-Route only on 2xx)."""
    to = request.value("To") or ""
    if to_tag and code > 100 and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    lines = [*(("Via", v) for v in request.values("Via")), ("From", request.value("From")
             or ""), ("To", to), ("Call-ID", request.call_id),
             ("CSeq", request.value("CSeq") or ""), ("Server", USER_AGENT), *(headers or [])]
    if code < 200 or code >= 300:
        lines = [line for line in lines if line[0] not in ("Content-Type", "Record-Route")]
    return format_message(f"{SIP_VERSION} {code} {reason}", lines, body)


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
