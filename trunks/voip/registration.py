"""Registering a `register` trunk with its carrier, and keeping it registered.

Driven by the endpoint's loop like every other transaction: REGISTER, one
digest retry on 401/407, a new attempt with Min-Expires on 423, and a refresh
at 80% of the expiry the registrar granted. A refusal or a timeout is reported
through `on_trunk_failure` (a passive signal for the monitor) and retried with a
growing delay. `stop` removes our binding (Expires: 0), answering the registrar's
challenge as a REGISTER does, so the registrar stops sending calls to this contact
at once, not when the binding expires.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from trunks.config import REGISTER_EXPIRES_S
from trunks.voip.auth import digest_authorization
from trunks.voip.message import (
    SIP_VERSION,
    Message,
    format_message,
    new_branch,
    new_call_id,
    new_tag,
    shorten,
    sip_host,
    via,
)
from trunks.voip.transport import Transport

logger = logging.getLogger(__name__)

REFRESH_FRACTION = 0.8
"""Refresh once this share of the granted lifetime has passed."""
RETRY_S = (2.0, 60.0)
"""First and longest delay before registering again after a failure."""
_REQUEST, _REFRESH = ("register", "request"), ("register", "refresh")


class RegistrationState(enum.StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


@dataclass
class Registration:
    """One trunk's registration; its state is read by the monitor and the CLI."""

    transport: Transport
    trunk: str
    proxy: tuple[str, int]
    domain: str
    username: str
    password: str
    expires_s: int = REGISTER_EXPIRES_S
    on_trunk_failure: Callable[[str], None] | None = None
    state: RegistrationState = RegistrationState.REGISTERING
    granted_s: int | None = None
    last_error: str | None = None
    call_id: str = ""
    local_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    branch: str = ""
    authenticated: bool = False
    retry_s: float = RETRY_S[0]
    active: bool = True
    """False once stopped: its timers, and responses other than the un-REGISTER's, are
    ignored."""
    stopped: threading.Event = field(default_factory=threading.Event)
    """Set once stopped and, if it un-REGISTERs, once that is answered or given up."""
    asking: int = 0
    """The expiry our latest REGISTER asked for (0: an un-REGISTER)."""

    def __post_init__(self) -> None:
        self.call_id = self.call_id or new_call_id(self.transport.address[0])

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"

    def start(self) -> None:
        """Send the first REGISTER."""
        with self.transport.lock:
            self._send(self.expires_s)

    def stop(self, unregister: bool = True) -> None:
        """Stop refreshing; with `unregister`, remove our binding at the registrar
        (Expires: 0) if we hold one, without waiting for the answer (`stopped` is set
        when it comes). Stopping again does nothing."""
        with self.transport.lock:
            if not self.active:
                return
            self.active = False
            self.transport.cancel(_REFRESH)
            self.transport.stop_retransmit(_REQUEST)
            if not (unregister and self.state is RegistrationState.REGISTERED):
                self.stopped.set()
                return
            self.state = RegistrationState.UNREGISTERING
            self._send(0)

    def request(self, expires: int, authorization: tuple[str, str] | None = None) -> bytes:
        """The next REGISTER of this registration (a new CSeq and branch each time)."""
        self.cseq += 1
        self.branch = new_branch()
        host, port = self.transport.address
        headers = [("Via", via(self.transport.address, self.branch)), ("Max-Forwards", "70"),
                   ("From", f"<{self.aor}>;tag={self.local_tag}"), ("To", f"<{self.aor}>"),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} REGISTER"),
                   ("Contact", f"<sip:{self.username}@{sip_host(host)}:{port}>"),
                   ("Expires", str(expires)), ("User-Agent", "hotline")]
        if authorization is not None:
            headers.append(authorization)
        return format_message(f"REGISTER sip:{self.domain} {SIP_VERSION}", headers)

    def challenge_answer(self, response: Message) -> tuple[str, str] | None:
        """Credentials for a 401/407, once per attempt."""
        if self.authenticated:
            return None
        self.authenticated = True
        return digest_authorization(response, "REGISTER", f"sip:{self.domain}",
                                    self.username, self.password)

    def on_response(self, response: Message) -> bool:
        """Act on a response to our latest REGISTER; False if it is not one."""
        listening = self.active or self.state is RegistrationState.UNREGISTERING
        if not (listening and response.cseq.method == "REGISTER" and
                response.call_id == self.call_id and response.cseq.number == self.cseq):
            return False
        code = response.status_code
        if code < 200:
            return True
        self.transport.stop_retransmit(_REQUEST)
        asked = self.asking
        if code in (401, 407) and (answer := self.challenge_answer(response)):
            self._send(asked, answer)
        elif not self.active:
            self._unregistered(None if code < 300 else f"{code} {response.reason}".strip())
        elif code < 300:
            self.granted_s = granted_expires(response, asked)
            self.state, self.last_error = RegistrationState.REGISTERED, None
            self.retry_s = RETRY_S[0]
            self.transport.schedule(_REFRESH, self.granted_s * REFRESH_FRACTION, self._refresh)
            logger.info("Trunk %s registered as %s for %d s", self.trunk, self.aor,
                        self.granted_s)
        elif code == 423 and (minimum := min_expires(response)) and minimum > asked:
            self.expires_s = minimum
            self._send(minimum)
        else:
            self._failed(f"{code} {response.reason}".strip())
        return True

    def _send(self, expires: int, authorization: tuple[str, str] | None = None) -> None:
        if authorization is None:
            self.authenticated = False
        self.asking = expires
        give_up = self._failed if expires else self._unregistered
        self.transport.transmit(_REQUEST, self.request(expires, authorization), self.proxy,
                                on_give_up=lambda: give_up("no response"))

    def _unregistered(self, error: str | None) -> None:
        """Our un-REGISTER was answered (`error` None: accepted), or given up."""
        with self.transport.lock:
            if self.state is not RegistrationState.UNREGISTERING:
                return
            self.state, self.last_error = RegistrationState.UNREGISTERED, error
            self.stopped.set()
        if error is None:
            logger.info("Trunk %s unregistered %s", self.trunk, self.aor)
        else:
            logger.warning("Trunk %s: un-REGISTER failed (%s); the registrar keeps our "
                           "binding until it expires", self.trunk, shorten(error))

    def _refresh(self) -> None:
        with self.transport.lock:
            if self.active:
                self._send(self.expires_s)

    def _failed(self, reason: str) -> None:
        with self.transport.lock:
            if not self.active:
                return
            self.state, self.last_error = RegistrationState.FAILED, reason
            delay, self.retry_s = self.retry_s, min(self.retry_s * 2, RETRY_S[1])
            self.transport.schedule(_REFRESH, delay, self._refresh)
        logger.warning("Trunk %s: registration failed (%s); retrying in %g s", self.trunk,
                       shorten(reason), delay)
        if self.on_trunk_failure is not None:
            self.on_trunk_failure(f"REGISTER: {reason}")


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
