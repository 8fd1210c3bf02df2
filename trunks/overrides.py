"""Operator overrides of trunk selection: drain, force, and their audit entries."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class OverrideAction(enum.StrEnum):
    DRAIN = "drain"
    """Take no new calls on this trunk; calls in progress continue."""
    FORCE = "force"
    """Prefer this trunk to every other usable one."""


class AuditAction(enum.StrEnum):
    DRAIN = "drain"
    FORCE = "force"
    RESTORE = "restore"


@dataclass(frozen=True)
class Override:
    trunk: str
    action: OverrideAction
    reason: str
    by: str
    at: float
    expires_at: float | None = None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Override:
        expires = fields.get("expires_at")
        return cls(fields["trunk"], OverrideAction(fields["action"]), fields["reason"],
                   fields["by"], float(fields["at"]), float(expires) if expires else None)


@dataclass(frozen=True)
class AuditEntry:
    """One operator action, as kept in the audit stream."""

    trunk: str
    action: AuditAction
    reason: str
    by: str
    at: float
    expires_at: float | None = None
    previous: str | None = None
    """The override this action replaced or removed, if any."""


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; raise ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"expected a positive duration such as 90s, 30m, 2h or 1d, got {text!r}")
    return float(match[1]) * _UNIT_S[match[2] or "s"]
