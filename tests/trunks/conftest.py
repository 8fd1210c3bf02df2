"""Fixtures shared by the trunk tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trunks.voip.endpoint import InboundCall
from trunks.voip.media import RtpEngine


@pytest.fixture
def engine() -> Iterator[RtpEngine]:
    """A running RTP engine on loopback."""
    rtp = RtpEngine()
    rtp.start()
    yield rtp
    rtp.stop()


def no_calls(call: InboundCall) -> None:
    """`on_call` for endpoints that must receive none."""
    raise AssertionError("no inbound call expected")
