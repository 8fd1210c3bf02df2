"""An answered call leg's SIP dialog, as another process needs it to take the leg up.

A hotline node keeps the `LegState` of both legs of each bridged call with the call's
record (`ivr.records`), so that when the node dies another node can take the call up
(`SipEndpoint.take_up`): it rebuilds each leg's dialog from its state and re-INVITEs the
peer with its own Contact and media address, and the peer's later requests come to it.

The state is saved now and then, not at every request, so the node taking up a leg
starts its CSeq and its SDP version `MARGIN` above what it read: a dead node may have
sent a session refresh or answered a hold since its last save. Both need only grow
(RFC 3261 12.2.1.1 for the CSeq; RFC 4566 5.2 recommends NTP timestamps for the
version, so peers cannot count on steps of one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

INBOUND, OUTBOUND = "inbound", "outbound"
MARGIN = 100
"""How far above the saved CSeq and SDP version the node taking up a leg starts."""


@dataclass
class LegState:
    """One answered leg's dialog: enough to send requests in it and to re-offer media."""

    kind: str
    """INBOUND (the peer called us) or OUTBOUND (we called the peer)."""
    trunk: str
    call_id: str
    local_tag: str
    cseq: int
    """The CSeq of our latest request in the dialog."""
    sdp_id: int
    sdp_version: int
    """Our SDP origin's session id and latest version."""
    payload_type: int
    dtmf_payload_type: int | None
    on_hold: bool
    """Whether the peer holds the call (it sent sendonly or inactive)."""
    invite: str = ""
    """INBOUND: the peer's INVITE as received (its route set, Contact, From and To)."""
    source: tuple[str, int] = ("", 0)
    """INBOUND: where the INVITE came from."""
    number: str = ""
    """OUTBOUND: the number called, its request URI and our From user."""
    uri: str = ""
    caller_id: str = ""
    remote_tag: str = ""
    route: list[str] = field(default_factory=list)
    remote_target: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LegState:
        """The state `as_dict` gave; raise ValueError if it is not one."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            state = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"not a call leg's state: {exc}") from exc
        if state.kind not in (INBOUND, OUTBOUND):
            raise ValueError(f"not a call leg's state: kind {state.kind!r}")
        state.source = (str(state.source[0]), int(state.source[1]))
        return state


__all__ = ["INBOUND", "MARGIN", "OUTBOUND", "LegState"]
