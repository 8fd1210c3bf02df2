"""Refused requests: counted per trunk and reason, logged at most once a minute a source."""

from __future__ import annotations

import logging

import pytest

from trunks.voip.refusals import REFUSED, RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused_count(trunk: str, reason: str) -> float:
    return sum(sample.value for metric in REFUSED.collect() for sample in metric.samples
               if sample.name == "hotline_sip_refused_total"
               and sample.labels == {"trunk": trunk, "reason": reason})


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_flood_from_one_source_logs_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RefusalLog("flood-a", clock=clock)
    caplog.set_level(logging.WARNING, "trunks.voip.refusals")
    for _ in range(2000):
        log.refused("203.0.113.9", "INVITE", "not a trunk address", "not_trunk_address")
        clock.now += 0.0005  # 2,000 a second
    assert warnings(caplog) == ["SIP endpoint flood-a refused an INVITE from 203.0.113.9 "
                                "(not a trunk address)"]
    clock.now += 59.5
    log.refused("203.0.113.9", "INVITE", "not a trunk address", "not_trunk_address")
    assert warnings(caplog)[1:] == ["SIP endpoint flood-a refused 2000 INVITEs from 203.0.113.9 "
                                    "in the last 60 s (not a trunk address)"]
    assert refused_count("flood-a", "not_trunk_address") == 2001


def test_each_source_gets_its_first_line(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog("flood-b", clock=Clock())
    caplog.set_level(logging.WARNING, "trunks.voip.refusals")
    for host in ("203.0.113.1", "203.0.113.2", "203.0.113.1"):
        log.refused(host, "INVITE", "not a trunk address", "not_trunk_address")
    assert len(warnings(caplog)) == 2


def test_the_table_of_sources_is_bounded() -> None:
    log = RefusalLog("flood-c", max_sources=100, clock=Clock())
    for i in range(10_000):
        log.refused(f"10.0.{i // 256}.{i % 256}", "INVITE", "not a trunk address",
                    "not_trunk_address")
    assert len(log._sources) == 100
    assert refused_count("flood-c", "not_trunk_address") == 10_000
