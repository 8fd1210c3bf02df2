"""What calls and registrations need from the SIP endpoint that owns a trunk's socket.

Incoming calls (`inbound.py`), outgoing calls (`outbound.py`) and the registration
(`registration.py`) are driven by the endpoint's receive loop. They send through it,
have it retransmit a request or a response until its answer arrives (RFC 3261 timers
A, E and G, from T1 doubling to T2), and set timers on it. `Transport` is that much
of the endpoint, so those modules do not depend on the endpoint itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

Key = tuple[str, str]
"""Names a retransmission or a timer: (call id or "register", what it is for)."""


class Transport(Protocol):
    """The endpoint's socket, retransmissions, timers, clock and lock."""

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the socket is bound to."""

    @property
    def lock(self) -> threading.RLock:
        """Held while touching any state the loop and the calls' threads share."""

    @property
    def transaction_timeout_s(self) -> float:
        """How long a request or a 2xx is retransmitted before giving up (64 * T1)."""

    def now(self) -> float:
        """The monotonic clock that timers run on."""

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        """Send one datagram; errors are ignored (UDP may lose it anyway)."""

    def transmit(self, key: Key, data: bytes, destination: tuple[str, int],
                 on_give_up: Callable[[], None] | None = None) -> None:
        """Send `data` now and retransmit it until `stop_retransmit(key)`; call
        `on_give_up` if that has not happened within the transaction timeout."""

    def retransmit(self, key: Key, data: bytes, destination: tuple[str, int],
                   on_give_up: Callable[[], None] | None = None) -> None:
        """Like `transmit`, for `data` already sent."""

    def stop_retransmit(self, key: Key) -> None:
        """Stop retransmitting (an answer arrived); no-op if nothing is pending."""

    def schedule(self, key: Key, delay: float, callback: Callable[[], None]) -> None:
        """Call `callback` from the loop after `delay` seconds, replacing any timer `key`."""

    def cancel(self, key: Key) -> None:
        """Drop timer `key` if it has not fired."""
