"""The notifier's errors, wrapped at the boundary::

    NotifyError
     +-- DeliveryFailed    one message could not be delivered to one recipient
"""

from __future__ import annotations

from failover.notify.alert import mask_numbers

_RETRIED_STATUSES = frozenset({408, 429})


class NotifyError(Exception):
    """Base of the notifier's errors."""


class DeliveryFailed(NotifyError):
    """One attempt at one recipient failed; `transient` ones are worth retrying: network
    errors (no `status`) when the caller says so, and 408, 429 and 5xx answers."""

    def __init__(self, detail: str, status: int | None = None, code: int | None = None, *,
                 transient: bool = False) -> None:
        super().__init__(detail, status, code)
        self.detail, self.status, self.code = mask_numbers(detail), status, code
        self.transient = transient if status is None else \
            status >= 500 or status in _RETRIED_STATUSES

    def __str__(self) -> str:
        if self.code is not None and self.code != self.status:
            return f"Twilio error {self.code} (HTTP {self.status}): {self.detail}"
        return f"HTTP {self.status}: {self.detail}" if self.status else self.detail


__all__ = ["DeliveryFailed", "NotifyError"]
