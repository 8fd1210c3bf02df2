"""Bounded waits on Redis: `LastKnown` answers fresh when the read is quick and with the
last value read when it is not; `within` gives up on a slow operation. The reads here
are plain functions that block on an event, standing in for a hung Redis (the real one,
paused, is in test_monitor.py and tests/ivr/test_redis_outage.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import wait_for
from trunks.bounded import LastKnown, TooSlow, within


class Source:
    """A value to read, which can be made to hang (until released) or fail."""

    def __init__(self) -> None:
        self.value = 1
        self.reads = 0
        self.failing = False
        self.released = threading.Event()
        self.released.set()

    def read(self) -> int:
        self.reads += 1
        self.released.wait()
        if self.failing:
            raise redis.ConnectionError("Connection refused")
        return self.value


@pytest.fixture
def source() -> Iterator[Source]:
    source = Source()
    yield source
    source.released.set()


@pytest.fixture
def kept(source: Source) -> Iterator[LastKnown[int]]:
    last = LastKnown("test value", source.read, wait_s=0.1, refresh_s=60.0)
    last.start()
    yield last
    source.released.set()
    last.stop()


def test_a_quick_read_is_fresh_every_time(source: Source, kept: LastKnown[int]) -> None:
    assert kept.get().value == 1
    source.value = 2
    reading = kept.get()
    assert (reading.value, reading.error) == (2, None), "read after the request"


def test_a_hung_read_gives_the_last_value_and_is_waited_for_once(
        source: Source, kept: LastKnown[int]) -> None:
    assert kept.get().value == 1
    source.released.clear()
    source.value = 2
    started = time.monotonic()
    reading = kept.get()
    assert 0.1 <= time.monotonic() - started < 0.3
    assert (reading.value, reading.error) == (1, "Redis did not answer within 0.1 s")
    started = time.monotonic()
    assert kept.get().value == 1
    assert time.monotonic() - started < 0.05, "the hung read is not waited for again"
    source.released.set()
    wait_for(lambda: kept.get().value == 2, timeout=2.0, what="fresh again")


def test_a_failed_read_keeps_the_last_value_and_says_why(
        source: Source, kept: LastKnown[int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trunks.bounded")
    assert kept.get().value == 1
    source.failing = True
    reading = kept.get()
    assert reading.value == 1 and "Redis unreachable: Connection refused" in (reading.error or "")
    assert "test value: Redis unreachable" in caplog.text  # logged once, as it started
    source.failing = False
    assert kept.get().error is None
    assert "test value: read from Redis again" in caplog.text


def test_nothing_read_yet_is_none(source: Source) -> None:
    source.released.clear()
    last = LastKnown("never read", source.read, wait_s=0.05)
    last.start()
    try:
        reading = last.get()
        assert reading.value is None and reading.read_at is None and reading.error
    finally:
        source.released.set()
        last.stop()


def test_within_gives_the_result_or_gives_up(source: Source) -> None:
    assert within(source.read, 0.5) == 1
    source.released.clear()
    with pytest.raises(TooSlow, match=r"did not answer within 0\.1 s") as raised:
        within(source.read, 0.1)
    assert isinstance(raised.value, redis.TimeoutError)
    source.released.set()
    source.failing = True
    with pytest.raises(redis.ConnectionError):
        within(source.read, 0.5)
