"""RFC 3261 grammar for the parts of a SIP message the endpoint relies on.

pyVoIP reads header values with string splits and accepts almost anything, or
reads it wrong: a To with ``; tag = x`` has no tag for it. These pure functions
tidy what the grammar allows (linear white space around ``/ ; = :``) and reject
what it does not, each with a `ValueError` saying what is wrong. `message.py`
turns those into `SipParseError`.
"""

from __future__ import annotations

import re

TOKEN_CHARS = r"A-Za-z0-9.!%*_+`'~-"
_TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
_PARAM = rf"""(?:;[{TOKEN_CHARS}]+(?:=(?:[:\[\]{TOKEN_CHARS}]+|{_QUOTED}))?)"""
_VIA = re.compile(rf"^SIP/2\.0/[{TOKEN_CHARS}]+ {_HOST}(?::[0-9]{{1,5}})?{_PARAM}*$")
_VIA_SEPARATORS = re.compile(r"\s*([/;=:])\s*")
_SPACES = re.compile(r"\s+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_DISPLAY_TOKENS = re.compile(rf"^[{TOKEN_CHARS}]+(?:\s+[{TOKEN_CHARS}]+)*$")
_CSEQ = re.compile(rf"^([0-9]{{1,10}})\s+([{TOKEN_CHARS}]+)$")
MAX_CSEQ = 2**31 - 1
"""RFC 3261 8.1.1.5: the CSeq number is below 2**31."""


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def tidy_via(value: str) -> str:
    """One Via value with the white space the grammar allows around / ; = : removed."""
    return _SPACES.sub(" ", _VIA_SEPARATORS.sub(r"\1", value.strip()))


def check_via(value: str) -> None:
    """A tidied Via value: ``SIP/2.0/transport host[:port]`` and well-formed parameters."""
    if _VIA.match(value) is None:
        raise ValueError(f"malformed Via {value[:80]!r}")


def tidy_params(value: str) -> str:
    """A name-addr or addr-spec value with the white space around its ``;`` and ``=``
    removed, outside quotes and angle brackets (so pyVoIP finds ``;tag=``)."""
    out: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in value.strip():
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char in "<>":
            depth += 1 if char == "<" else -1
        elif depth == 0 and char in ";=":
            while out and out[-1] in " \t":
                out.pop()
        elif depth == 0 and char in " \t" and out and out[-1] in ";=":
            continue
        out.append(char)
    return "".join(out)


def check_name_addr(name: str, value: str) -> None:
    """A From, To or Contact value: balanced quotes, a display name of tokens or one
    quoted string, and no white space inside <...>."""
    display, angle, rest = _split_display(name, value)
    if not angle:
        return
    if display and not (re.fullmatch(_QUOTED, display) or _DISPLAY_TOKENS.match(display)):
        raise ValueError(f"{name} has a display name that is neither tokens nor quoted: "
                         f"{display[:40]!r}")
    uri, close, _ = rest.partition(">")
    if not close:
        raise ValueError(f"{name} has an unclosed <")
    if not _SCHEME.match(uri):
        raise ValueError(f"{name} has a malformed URI <{uri[:60]}>")


def check_request_uri(uri: str) -> None:
    """A Request-URI: scheme:rest, and for sip/sips no header part after the host."""
    if not _SCHEME.match(uri) or "<" in uri or ">" in uri:
        raise ValueError(f"malformed Request-URI {uri[:80]!r}")
    if uri.lower().startswith(("sip:", "sips:")) and "?" in uri.rpartition("@")[2]:
        raise ValueError("the Request-URI has headers (?...), which RFC 3261 forbids there")


def check_cseq(value: str) -> tuple[int, str]:
    """The number and method of a CSeq value."""
    match = _CSEQ.match(value.strip())
    if match is None or int(match[1]) > MAX_CSEQ:
        raise ValueError(f"bad CSeq {value[:40]!r}")
    return int(match[1]), match[2]


def _split_display(name: str, value: str) -> tuple[str, bool, str]:
    """(display name, whether a <...> follows it, what follows the <)."""
    quoted = escaped = False
    for i, char in enumerate(value):
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char == "<":
            return value[:i].strip(), True, value[i + 1:]
    if quoted:
        raise ValueError(f"{name} has an unterminated quoted string")
    return value.strip(), False, ""
