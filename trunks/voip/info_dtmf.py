"""Key presses sent as SIP INFO, the way many PBXs and some carriers send them.

Two bodies are in use, neither in an RFC: ``application/dtmf-relay`` (Cisco's
``Signal=5`` and ``Duration=160`` lines) and ``application/dtmf`` (the key alone).
Some senders write * and # as 10 and 11, as RFC 4733 numbers them.
"""

from __future__ import annotations

from trunks.voip.message import Message
from trunks.voip.rtp import DTMF_DIGITS

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
ACCEPTED = f"{DTMF_RELAY}, {DTMF}"
"""For the Accept header of a 415 to an INFO we cannot read."""


class InfoError(ValueError):
    """An INFO body that is not a key press; `status` and `reason` answer it."""

    def __init__(self, text: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(text)
        self.status, self.reason = status, reason


def info_digit(info: Message) -> str | None:
    """The key an INFO carries, or None for an INFO without a body (a keep-alive)."""
    if not info.content.strip():
        return None
    kind = info.content_type
    text = info.content.decode("ascii", errors="replace")
    if kind == DTMF_RELAY:
        fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        signal = {name.strip().lower(): value.strip() for name, value in fields.items()}
        value = signal.get("signal", "")
    elif kind == DTMF:
        value = text.strip()
    else:
        raise InfoError(f"INFO body of type {kind or 'unknown'}", 415, "Unsupported Media Type")
    return _digit(value)


def _digit(value: str) -> str:
    if value.isdigit() and 10 <= int(value) < len(DTMF_DIGITS):
        return DTMF_DIGITS[int(value)]
    if len(value) == 1 and value.upper() in DTMF_DIGITS:
        return value.upper()
    raise InfoError(f"INFO key {value[:20]!r} is not a DTMF key")
