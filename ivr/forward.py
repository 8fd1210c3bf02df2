"""Placing the calls of a forward: which trunk carries the call to a person.

`TrunkDialer` asks the trunk monitor for the usable trunks, best first, and
places the call through the first that has an endpoint. The flow calls it
again, excluding the trunks already tried, when a set-up fails on a trunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from trunks.config import TrunkConfig
from trunks.selection import CallNeeds
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.outbound import OutboundCall

logger = logging.getLogger(__name__)


class Dialer(Protocol):
    def dial(self, number: str, ring_s: float,
             exclude: frozenset[str]) -> tuple[str, OutboundCall] | None:
        """Call `number` through the best trunk not in `exclude`; (trunk, call), or
        None when no trunk is left."""


class TrunkDialer:
    """Dials through the trunks' endpoints in the order the monitor's selection gives."""

    def __init__(self, select: Callable[[CallNeeds], list[TrunkConfig]],
                 endpoints: Mapping[str, SipEndpoint]) -> None:
        self.select = select
        self.endpoints = endpoints

    def dial(self, number: str, ring_s: float,
             exclude: frozenset[str]) -> tuple[str, OutboundCall] | None:
        for trunk in self.select(CallNeeds(exclude=exclude)):
            endpoint = self.endpoints.get(trunk.name)
            if endpoint is not None:
                return trunk.name, endpoint.place_call(number, ring_s)
        logger.warning("No usable trunk left to call %s (tried: %s)", number,
                       ", ".join(sorted(exclude)) or "none")
        return None


__all__ = ["Dialer", "TrunkDialer"]
