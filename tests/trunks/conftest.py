"""Helpers shared by the trunk tests (the RTP `engine` fixture is in tests/conftest.py)."""

from __future__ import annotations

from trunks.voip.inbound import InboundCall


def no_calls(call: InboundCall) -> None:
    """`on_call` for endpoints that must receive none."""
    raise AssertionError("no inbound call expected")
