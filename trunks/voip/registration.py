"""Registering a `register` trunk with its carrier, and keeping it registered.

Driven by the endpoint's loop like every other transaction: REGISTER, one
digest retry on 401/407, a new attempt with Min-Expires on 423, and a refresh
at 80% of the expiry the registrar granted. A refusal or a timeout is reported
through the endpoint's `on_trunk_failure` (a passive signal for the monitor) and
retried with a growing delay.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trunks.voip.message import (
    SIP_VERSION,
    Message,
    format_message,
    new_branch,
    new_call_id,
    new_tag,
    sip_host,
    via,
)
from trunks.voip.outbound import digest_authorization

if TYPE_CHECKING:
    from trunks.voip.endpoint import SipEndpoint

logger = logging.getLogger(__name__)

REGISTER_EXPIRES_S = 300
"""Registration lifetime asked for; the registrar may grant less."""
REFRESH_FRACTION = 0.8
"""Refresh once this share of the granted lifetime has passed."""
RETRY_S = (2.0, 60.0)
"""First and longest delay before registering again after a failure."""


class RegistrationState(enum.StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERED = "unregistered"


@dataclass
class Registration:
    """One trunk's registration; its state is read by the monitor and the CLI."""

    endpoint: SipEndpoint
    username: str
    password: str
    expires_s: int = REGISTER_EXPIRES_S
    state: RegistrationState = RegistrationState.REGISTERING
    granted_s: int | None = None
    last_error: str | None = None
    call_id: str = ""
    local_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    branch: str = ""
    authenticated: bool = False
    retry_s: float = RETRY_S[0]

    def __post_init__(self) -> None:
        self.call_id = self.call_id or new_call_id(self.endpoint.address[0])

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.endpoint.domain}"

    def request(self, expires: int, authorization: tuple[str, str] | None = None) -> bytes:
        """The next REGISTER of this registration (a new CSeq and branch each time)."""
        self.cseq += 1
        self.branch = new_branch()
        host, port = self.endpoint.address
        headers = [("Via", via(self.endpoint.address, self.branch)), ("Max-Forwards", "70"),
                   ("From", f"<{self.aor}>;tag={self.local_tag}"), ("To", f"<{self.aor}>"),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} REGISTER"),
                   ("Contact", f"<sip:{self.username}@{sip_host(host)}:{port}>"),
                   ("Expires", str(expires)), ("User-Agent", "hotline")]
        if authorization is not None:
            headers.append(authorization)
        return format_message(f"REGISTER sip:{self.endpoint.domain} {SIP_VERSION}", headers)

    def challenge_answer(self, response: Message) -> tuple[str, str] | None:
        """Credentials for a 401/407, once per attempt."""
        if self.authenticated:
            return None
        self.authenticated = True
        return digest_authorization(response, "REGISTER", f"sip:{self.endpoint.domain}",
                                    self.username, self.password)


def granted_expires(response: Message, asked: int) -> int:
    """The lifetime a 200 grants: the Contact's expires parameter, else Expires, else asked."""
    contact = response.value("Contact") or ""
    match = re.search(r";\s*expires=(\d+)", contact)
    if match:
        return int(match[1])
    header = response.value("Expires")
    return int(header) if header and header.isdigit() else asked


def min_expires(response: Message) -> int | None:
    value = response.value("Min-Expires")
    return int(value) if value and value.strip().isdigit() else None
