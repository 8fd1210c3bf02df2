"""A ticket: what the voice bot could not answer, for a person to call back.

    open --ack--> acked --resolve--> resolved
      +----------resolve-------------^

Delivery to the helpdesk is tracked beside the status (``delivered_at``,
``delivery_attempts``, ``delivery_error``), since the helpdesk may take a
ticket before or after someone acknowledges it here.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from dataclasses import dataclass
from typing import Any

from ivr.tickets.errors import InvalidTransition

TIME_FIELDS = ("created_at", "sla_due_at", "acked_at", "resolved_at", "delivered_at")
"""The fields that hold times (seconds since the epoch)."""


class Priority(enum.StrEnum):
    """P1 is the most urgent."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    def raised(self, levels: int = 1) -> Priority:
        """This priority made `levels` more urgent, stopping at P1."""
        return Priority(f"P{max(1, int(self.value[1]) - levels)}")


class TicketStatus(enum.StrEnum):
    OPEN = "open"
    ACKED = "acked"
    RESOLVED = "resolved"


NEXT_STATUSES: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.OPEN: frozenset({TicketStatus.ACKED, TicketStatus.RESOLVED}),
    TicketStatus.ACKED: frozenset({TicketStatus.RESOLVED}),
    TicketStatus.RESOLVED: frozenset(),
}
"""The statuses each status may change to."""


@dataclass(frozen=True)
class Turn:
    """One utterance of the call: `speaker` is "caller" or "bot"."""

    speaker: str
    text: str
    at: float | None = None


@dataclass(frozen=True)
class Candidate:
    """An FAQ entry the bot considered, with its search score (higher is better)."""

    faq_id: str
    question: str
    score: float
    category: str | None = None
    priority: Priority | None = None


@dataclass(frozen=True)
class Ticket:
    id: str
    """Speakable id, "4729-1830"; see `ivr.tickets.ids`."""
    uid: str
    """Globally unique; the helpdesk's idempotency key."""
    created_at: float
    caller: str
    call_id: str
    trunk: str
    reason: str
    """Why the bot could not help, e.g. "no confident answer"."""
    category: str
    priority: Priority
    priority_reasons: tuple[str, ...]
    sla_due_at: float
    transcript: tuple[Turn, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    node: str = ""
    status: TicketStatus = TicketStatus.OPEN
    acked_at: float | None = None
    resolved_at: float | None = None
    delivered_at: float | None = None
    delivery_attempts: int = 0
    delivery_error: str | None = None
    previous_id: str | None = None
    """The id the caller heard, when replaying the spool found it taken and renamed it."""

    def moved_to(self, status: TicketStatus, at: float) -> Ticket:
        """This ticket in `status` from `at`; InvalidTransition if its status forbids that."""
        if status not in NEXT_STATUSES[self.status]:
            raise InvalidTransition(self.id, self.status.value, status.value)
        if status == TicketStatus.ACKED:
            return dataclasses.replace(self, status=status, acked_at=at)
        return dataclasses.replace(self, status=status, resolved_at=at)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_readable_dict(self) -> dict[str, Any]:
        """`to_dict()` with its times in ISO 8601 UTC, for people and the helpdesk."""
        data = self.to_dict()
        for name in TIME_FIELDS:
            data[name] = _iso(data[name])
        for turn in data["transcript"]:
            turn["at"] = _iso(turn["at"])
        return data

    @classmethod
    def from_dict(cls, data: object) -> Ticket:
        """A ticket from `to_dict()` output; ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("a ticket must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"ticket has unknown fields: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            if name not in data:
                if spec.default is dataclasses.MISSING:
                    raise ValueError(f"ticket has no {name}")
                continue
            values[name] = _convert(name, data[name])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> Ticket:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not valid JSON: {exc}") from exc
        return cls.from_dict(data)


_STRINGS = frozenset({"id", "uid", "caller", "call_id", "trunk", "reason", "category", "node"})
_OPTIONAL_STRINGS = frozenset({"delivery_error", "previous_id"})
_TIMES = frozenset({"created_at", "sla_due_at"})
_OPTIONAL_TIMES = frozenset({"acked_at", "resolved_at", "delivered_at"})


def _convert(name: str, value: Any) -> Any:
    """`value` of field `name` as the dataclass holds it; ValueError if it has the wrong type."""
    if name in _STRINGS:
        return _string(name, value)
    if name in _OPTIONAL_STRINGS:
        return None if value is None else _string(name, value)
    if name in _TIMES:
        return _number(name, value)
    if name in _OPTIONAL_TIMES:
        return None if value is None else _number(name, value)
    if name == "delivery_attempts":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"ticket {name}: expected a count, got {value!r}")
        return value
    if name == "priority":
        return _priority(name, value)
    if name == "status":
        try:
            return TicketStatus(value)
        except ValueError:
            raise ValueError(f"ticket status: unknown value {value!r}") from None
    if name == "priority_reasons":
        return tuple(_string(name, reason) for reason in _list(name, value))
    if name == "transcript":
        return tuple(_turn(item) for item in _list(name, value))
    return tuple(_candidate(item) for item in _list(name, value))


def _turn(item: Any) -> Turn:
    data = _object("transcript", item, {"speaker", "text"}, {"at"})
    at = data.get("at")
    return Turn(_string("transcript speaker", data["speaker"]),
                _string("transcript text", data["text"]),
                None if at is None else _number("transcript at", at))


def _candidate(item: Any) -> Candidate:
    data = _object("candidates", item, {"faq_id", "question", "score"},
                   {"category", "priority"})
    category, priority = data.get("category"), data.get("priority")
    return Candidate(_string("candidate faq_id", data["faq_id"]),
                     _string("candidate question", data["question"]),
                     _number("candidate score", data["score"]),
                     None if category is None else _string("candidate category", category),
                     None if priority is None else _priority("candidate priority", priority))


def _object(name: str, item: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"ticket {name}: expected objects, got {item!r}")
    missing = sorted(required - set(item))
    unknown = sorted(set(item) - required - optional)
    if missing or unknown:
        raise ValueError(f"ticket {name}: missing {missing or 'nothing'}, "
                         f"unknown {unknown or 'nothing'}")
    return item


def _priority(name: str, value: Any) -> Priority:
    try:
        return Priority(value)
    except ValueError:
        raise ValueError(f"ticket {name}: expected P1, P2, P3 or P4, got {value!r}") from None


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"ticket {name}: expected text, got {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"ticket {name}: expected a number, got {value!r}")
    return float(value)


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"ticket {name}: expected a list, got {value!r}")
    return value


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds")
