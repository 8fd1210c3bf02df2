"""Errors raised by the trunks package.

    TrunkError
     +-- UnknownTrunk          a name that is not in the configuration
     +-- ProbeError            one probe of a trunk failed
          +-- ProbeTimeout     no response within the probe timeout
          +-- ProbeRejected    the trunk answered with a failure status (5xx, 6xx, 408)
          +-- ProbeUnreachable the network refused (ICMP port unreachable, no route, DNS)
"""

from __future__ import annotations


class TrunkError(Exception):
    """Base of the trunks package's errors."""


class UnknownTrunk(TrunkError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown trunk {self.name!r} (configured: {', '.join(self.known) or 'none'})"


class ProbeError(TrunkError):
    """A failed probe; `str()` is the short reason shown as the trunk's last error."""


class ProbeTimeout(ProbeError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no response to OPTIONS within {timeout_s:g} s")


class ProbeRejected(ProbeError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"OPTIONS answered {status} {reason}".rstrip())
        self.status = status


class ProbeUnreachable(ProbeError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"unreachable: {detail}")
