"""Session timers (RFC 4028): how long a call lives without a refresh, and who refreshes.

A carrier that asks for session timers puts ``Session-Expires: 1800;refresher=uac`` in
its INVITE. The answerer (here, the UAS) echoes the interval and names the refresher:
the one the caller chose, else the caller if it supports timers, else itself. The
refresher sends a re-INVITE or an UPDATE every half interval; if none succeeds, either
side ends the call shortly before the interval runs out. This module only negotiates
and says when: `InboundCall` sends the refreshes and the BYE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trunks.voip.message import Message

MIN_SE_S = 90
"""The smallest interval we accept: RFC 4028 section 4 forbids less than 90 s."""
_SESSION_EXPIRES = re.compile(r"^\s*(\d+)\s*(?:;(.*))?$")


class IntervalTooSmall(ValueError):
    """A Session-Expires below our Min-SE: answer 422 with `Min-SE: min_se`."""

    def __init__(self, asked: int, min_se: int) -> None:
        super().__init__(f"Session-Expires {asked} s is below our Min-SE of {min_se} s")
        self.min_se = min_se


@dataclass(frozen=True)
class SessionTimer:
    """The session timer a dialog agreed on."""

    interval_s: int
    refresher: str
    """"uac" (the caller refreshes) or "uas" (we do)."""
    required: bool
    """Whether the caller supports timers, so our 2xx says ``Require: timer``."""

    @property
    def we_refresh(self) -> bool:
        return self.refresher == "uas"

    @property
    def refresh_after_s(self) -> float:
        """When the refresher sends its refresh: half the interval (RFC 4028 10)."""
        return self.interval_s / 2

    @property
    def expire_after_s(self) -> float:
        """When the other side gives up on a missing refresh and sends BYE: the interval
        less a third of it, at most 32 s (RFC 4028 10)."""
        return self.interval_s - min(32.0, self.interval_s / 3)

    def headers(self) -> list[tuple[str, str]]:
        """The 2xx headers that confirm this timer."""
        lines = [("Session-Expires", f"{self.interval_s};refresher={self.refresher}")]
        return lines + ([("Require", "timer")] if self.required else [])


def supports_timer(message: Message) -> bool:
    return "timer" in message.tokens("Supported") | message.tokens("Require")


def negotiate(request: Message, min_se_s: int = MIN_SE_S) -> SessionTimer | None:
    """The timer for the dialog `request` (an INVITE, re-INVITE or UPDATE) starts or
    refreshes; None when it asks for none. Raise `IntervalTooSmall` for 422."""
    value = request.value("Session-Expires")
    if value is None:
        return None
    match = _SESSION_EXPIRES.match(value)
    if match is None:
        raise ValueError(f"malformed Session-Expires {value!r}")
    asked = int(match[1])
    if asked < min_se_s:
        raise IntervalTooSmall(asked, min_se_s)
    parameters = dict(p.strip().lower().partition("=")[::2] for p in (match[2] or "").split(";")
                      if p.strip())
    supported = supports_timer(request)
    refresher = parameters.get("refresher")
    if refresher not in ("uac", "uas") or not supported:
        refresher = "uac" if supported else "uas"
    return SessionTimer(asked, refresher, supported)
