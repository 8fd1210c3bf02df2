"""Probing a trunk: SIP OPTIONS transactions driven by the monitor's event loop.

A probe owns one connected UDP socket per trunk. Connecting it makes the kernel
report ICMP port-unreachable as ``ConnectionRefusedError``, so a carrier whose
process died is known at once instead of after a timeout. The probe never
blocks: the loop calls `send`, then `on_readable` when the socket has data and
`on_timer` at `next_deadline`; each returns the outcomes of finished probes.
"""

from __future__ import annotations

import abc
import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from trunks.config import TrunkConfig
from trunks.errors import ProbeError, ProbeRejected, ProbeTimeout, ProbeUnreachable
from trunks.voip import (
    SipParseError,
    build_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    sip_host,
)

logger = logging.getLogger(__name__)

USER_AGENT = "hotline-monitor"
RECV_BYTES = 65_535
FAILURE_STATUSES = frozenset({408})
"""Below 500, these statuses still count as a failed probe; every other 1xx-4xx
final shows that the carrier's SIP stack is alive (many answer OPTIONS 403/405)."""


@dataclass(frozen=True)
class ProbeOutcome:
    """A finished probe: `rtt_s` when answered, `error` when it failed."""

    rtt_s: float | None = None
    error: ProbeError | None = None


@dataclass
class _Transaction:
    branch: str
    cseq: int
    data: bytes
    sent_at: float
    deadline: float
    retransmit_at: float
    interval: float


class Probe(abc.ABC):
    """One trunk's probing, as seen by the monitor's loop."""

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """The socket to watch for reading, or None while there is none."""

    @abc.abstractmethod
    def send(self, now: float) -> list[ProbeOutcome]:
        """Start a probe; returns outcomes that are known at once (a send error)."""

    @abc.abstractmethod
    def on_readable(self, now: float) -> list[ProbeOutcome]:
        """Read what arrived and return the probes it finished."""

    @abc.abstractmethod
    def on_timer(self, now: float) -> list[ProbeOutcome]:
        """Retransmit or time out what is due."""

    @abc.abstractmethod
    def next_deadline(self) -> float | None:
        """Monotonic time at which `on_timer` must run next, if any."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the socket; pending probes are dropped."""


class OptionsProbe(Probe):
    """SIP OPTIONS over UDP to the trunk's proxy, retransmitted at T1 until the timeout."""

    def __init__(self, trunk: TrunkConfig, user_agent: str = USER_AGENT) -> None:
        self.trunk = trunk
        self.user_agent = user_agent
        self.ignored = 0
        """Datagrams dropped as malformed or belonging to no probe of ours."""
        self._sock: socket.socket | None = None
        self._call_id = ""
        self._from_tag = new_tag()
        self._cseq = 0
        self._pending: dict[str, _Transaction] = {}

    def fileno(self) -> int | None:
        return None if self._sock is None else self._sock.fileno()

    def send(self, now: float) -> list[ProbeOutcome]:
        try:
            sock = self._socket()
        except OSError as exc:
            return [ProbeOutcome(error=ProbeUnreachable(_describe(exc)))]
        self._cseq += 1
        host, port = self.trunk.address
        uri = f"sip:{self.trunk.domain}" if self.trunk.domain else f"sip:{sip_host(host)}:{port}"
        branch = new_branch()
        local = sock.getsockname()[:2]
        data = build_request(
            "OPTIONS", uri, local=local, call_id=self._call_id, cseq=self._cseq, branch=branch,
            from_uri=f"sip:{self.user_agent}@{sip_host(local[0])}", from_tag=self._from_tag,
            to_uri=uri, user_agent=self.user_agent, extra={"Accept": "application/sdp"})
        settings = self.trunk.probe
        tx = _Transaction(branch, self._cseq, data, now, now + settings.timeout_s,
                          now + settings.retransmit_s, settings.retransmit_s)
        self._pending[branch] = tx
        return self._transmit(tx)

    def on_readable(self, now: float) -> list[ProbeOutcome]:
        outcomes: list[ProbeOutcome] = []
        while self._sock is not None:
            try:
                data = self._sock.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:  # ICMP error for an earlier datagram
                outcomes.extend(self._fail_oldest(ProbeUnreachable(_describe(exc))))
                continue
            outcome = self._on_datagram(data, now)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def on_timer(self, now: float) -> list[ProbeOutcome]:
        outcomes: list[ProbeOutcome] = []
        for tx in list(self._pending.values()):
            if now >= tx.deadline:
                del self._pending[tx.branch]
                outcomes.append(ProbeOutcome(error=ProbeTimeout(self.trunk.probe.timeout_s)))
            elif now >= tx.retransmit_at:
                tx.interval *= 2
                tx.retransmit_at = now + tx.interval
                outcomes.extend(self._transmit(tx))
        return outcomes

    def next_deadline(self) -> float | None:
        return min((min(tx.deadline, tx.retransmit_at) for tx in self._pending.values()),
                   default=None)

    def close(self) -> None:
        self._pending.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            host, port = self.trunk.address
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self._sock = sock
            self._call_id = new_call_id(sock.getsockname()[0])
        return self._sock

    def _transmit(self, tx: _Transaction) -> list[ProbeOutcome]:
        assert self._sock is not None
        try:
            self._sock.send(tx.data)
        except OSError as exc:  # a pending ICMP error surfaces on send, too
            self._pending.pop(tx.branch, None)
            return [ProbeOutcome(error=ProbeUnreachable(_describe(exc)))]
        return []

    def _on_datagram(self, data: bytes, now: float) -> ProbeOutcome | None:
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.ignored += 1
            logger.debug("Trunk(%s) ignored a datagram: %s", self.trunk.name, exc)
            return None
        tx = self._pending.get(message.branch or "")
        if (tx is None or not message.is_response or message.call_id != self._call_id
                or message.cseq.number != tx.cseq or message.cseq.method != "OPTIONS"):
            self.ignored += 1
            logger.debug("Trunk(%s) ignored a message for no probe of ours", self.trunk.name)
            return None
        if message.status_code < 200:
            return None
        del self._pending[tx.branch]
        if message.status_code >= 500 or message.status_code in FAILURE_STATUSES:
            return ProbeOutcome(error=ProbeRejected(message.status_code, message.reason))
        return ProbeOutcome(rtt_s=now - tx.sent_at)

    def _fail_oldest(self, error: ProbeError) -> list[ProbeOutcome]:
        if not self._pending:
            return []
        oldest = min(self._pending.values(), key=lambda tx: tx.sent_at)
        del self._pending[oldest.branch]
        return [ProbeOutcome(error=error)]


def probe_once(probe: Probe, clock: Callable[[], float] = time.monotonic) -> ProbeOutcome:
    """Run a single probe to completion, blocking; for the CLI and tests."""
    outcomes = probe.send(clock())
    with selectors.DefaultSelector() as selector:
        fd = probe.fileno()
        if fd is not None:
            selector.register(fd, selectors.EVENT_READ)
        while not outcomes:
            deadline = probe.next_deadline()
            if deadline is None:
                raise RuntimeError("probe has neither an outcome nor a pending transaction")
            ready = selector.select(max(0.0, deadline - clock()))
            outcomes = probe.on_readable(clock()) if ready else []
            outcomes += probe.on_timer(clock())
    return outcomes[0]


def _describe(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "ICMP port unreachable"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    return exc.strerror or str(exc)
