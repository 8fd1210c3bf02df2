"""The on-call roster: rotation, cover, escalation order, and bad files."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path

import pytest

from ivr.flow.oncall import load_oncall
from ivr.settings import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "oncall.yaml"
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@pytest.mark.parametrize(("moment", "roster"), [
    ("2026-01-05T09:00", ["alice", "bob", "carol"]),   # the rotation's first handover
    ("2026-01-12T08:59", ["alice", "bob", "carol"]),   # a week later, a minute early
    ("2026-01-12T09:00", ["bob", "carol", "alice"]),
    ("2026-01-19T12:00", ["carol", "alice", "bob"]),
    ("2026-01-26T09:00", ["alice", "bob", "carol"]),   # round again
    ("2026-01-05T08:00", ["carol", "alice", "bob"]),   # before the start: counted backwards
    ("2026-12-24T17:59", ["carol", "alice", "bob"]),
    ("2026-12-25T10:00", ["bob", "alice", "carol"]),   # cover: bob in carol's turn
    ("2026-12-28T09:00", ["alice", "bob", "carol"]),   # cover over, next turn
])
def test_roster_follows_rotation_and_cover(moment: str, roster: list[str]) -> None:
    oncall = load_oncall(EXAMPLE)
    assert oncall.roster(at(moment)) == roster
    assert oncall.roster(at(moment).astimezone(datetime.UTC)) == roster, "any zone in"
    assert oncall.on_duty(at(moment)) == roster[0]


def test_phone_numbers_are_normalised_digits(tmp_path: Path) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text("timezone: UTC\npeople:\n  a: {phone: +86 138-0000 0001}\n  b: {phone: 1002}\n"
                    "rotation: {order: [a, b], start: 2026-01-05}\n")
    oncall = load_oncall(path)
    assert oncall.people["a"].phone == "+8613800000001" and oncall.people["b"].phone == "1002"
    assert oncall.name("a") == "a", "the key stands in for a missing name"


@pytest.mark.parametrize(("text", "message"), [
    ("people:\n  a: {phone: 'sip:evil@example.com'}\n", "people.a.phone: expected a phone"),
    ("people:\n  a: {phone: '1001'}\n  b: {phone: '1002@x'}\n", "people.b.phone"),
    ("timezone: Mars/Olympus\n", "timezone: unknown time zone"),
    ("rotation: {order: [a, zed], start: 2026-01-05}\n", "no person 'zed' in people"),
    ("rotation: {order: [a, a], start: 2026-01-05}\n", "appears more than once"),
    ("cover: [{person: a, start: 2026-02-02T10:00, end: 2026-02-01T10:00}]\n",
     "end must be after start"),
    ("rotation: {order: [a], start: 2026-01-05, every_days: 0}\n", "every_days"),
])
def test_bad_roster_is_refused_with_a_clear_error(tmp_path: Path, text: str,
                                                  message: str) -> None:
    base = {"timezone": "timezone: UTC\n", "people": "people:\n  a: {phone: '1001'}\n",
            "rotation": "rotation: {order: [a], start: 2026-01-05}\n"}
    key = text.split(":")[0]
    base[key] = text
    path = tmp_path / "oncall.yaml"
    path.write_text("".join(base.values()))
    with pytest.raises(ConfigError) as raised:
        load_oncall(path)
    assert message in str(raised.value)
