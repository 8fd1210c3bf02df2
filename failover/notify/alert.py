"""What the notifier sends: an `Alert` of some `AlertKind`, each `Delivery` of it, and
phone numbers masked for logs and messages.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

_LONG_NUMBER = re.compile(r"\+?[0-9]{7,}")


class AlertKind(enum.StrEnum):
    ALL_TRUNKS_DOWN = "all_trunks_down"
    TRUNK_DOWN = "trunk_down"
    TRUNK_UP = "trunk_up"
    DRILL_PASSED = "drill_passed"
    DRILL_FAILED = "drill_failed"
    TICKET_P1 = "ticket_p1"


URGENT_KINDS = frozenset({AlertKind.ALL_TRUNKS_DOWN})
"""Kinds that are always urgent, whatever the sender says."""


@dataclass(frozen=True)
class Alert:
    """Something people must hear about. `text` is one plain sentence, fit for an SMS
    and to be spoken; `key` identifies the event for dedupe (``trunk-down:carrier-a``);
    `urgent` alerts also ring `call_to`; `details` go to the webhook only."""

    kind: AlertKind
    key: str
    text: str
    urgent: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key or not self.text.strip():
            raise ValueError("an alert needs a key and a text")
        if self.kind in URGENT_KINDS:
            object.__setattr__(self, "urgent", True)


@dataclass(frozen=True)
class Delivery:
    """One finished attempt (after retries) at one recipient."""

    key: str
    channel: str
    recipient: str
    ok: bool


def mask_number(number: str) -> str:
    """`number` with all but its last four digits starred, for logs."""
    return re.sub(r"[0-9](?=(?:[^0-9]*[0-9]){4})", "*", number)


def mask_numbers(text: str) -> str:
    """`text` with every long run of digits (a phone number, probably) masked."""
    return _LONG_NUMBER.sub(lambda m: mask_number(m[0]), text)


__all__ = ["URGENT_KINDS", "Alert", "AlertKind", "Delivery", "mask_number", "mask_numbers"]
