"""The wall clock the flows read (business hours, who is on call), as one injectable
callable: the server takes it as an argument, so tests run any day as on a fixed one."""

from __future__ import annotations

import datetime
from collections.abc import Callable

Now = Callable[[], datetime.datetime]
"""Returns the current time, timezone-aware."""


def utc_now() -> datetime.datetime:
    """The real time, in UTC."""
    return datetime.datetime.now(datetime.UTC)


def fixed(moment: datetime.datetime) -> Now:
    """A clock that always reads `moment` (timezone-aware)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone")
    return lambda: moment


__all__ = ["Now", "fixed", "utc_now"]
