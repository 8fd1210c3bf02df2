"""A ticket's priority and SLA due time.

The priority starts from the best FAQ candidate's own priority (or the
configured default) and is raised by what the caller said:

- production at a standstill ("the line is stopped", "production down")
  raises it one level, and to at least P2;
- a safety problem ("smoke", "fire", "electric shock", "injured") makes it P1.

Only the caller's turns are searched, since the bot's answers may quote FAQ
text about fire or safety. Negations ("no smoke") are not recognised, on
purpose: an over-urgent ticket costs a quick call, a missed fire costs more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ivr.tickets.config import SlaHours
from ivr.tickets.model import Candidate, Priority, Turn

SECONDS_PER_HOUR = 3600.0
PRODUCTION_FLOOR = Priority.P2
"""The least urgent priority a ticket about stopped production may have."""
CALLER = "caller"

_SUBJECT = r"(?:production|line|lines|plant|factory|machine|machines|conveyor|assembly|packer)"
_STOPPED = (r"(?:stopped|stops|stop|down|halted|standstill|stuck|dead|shut ?down|"
            r"not running|isn'?t running|won'?t (?:start|run)|doesn'?t (?:start|run))")
PRODUCTION_CUES = (
    re.compile(rf"\b{_SUBJECT}\b(?:[\w' ]{{0,30}}?)\b{_STOPPED}\b"),
    re.compile(r"\b(?:stopped|halted|shut ?down|lost)\b(?:[\w' ]{0,20}?)"
               r"\b(?:production|the line|the plant|the factory)\b"),
    re.compile(r"\b(?:standstill|can'?t produce|cannot produce|nothing is running)\b"),
)
"""Patterns of lower-cased caller speech that mean production has stopped."""
SAFETY_CUES = (
    re.compile(r"\b(?:fire|fires|on fire|flames?|smoke|smoking|smoky|burn|burns|burned|burnt|"
               r"burning|scorched|melting|melted)\b"),
    re.compile(r"\b(?:injury|injuries|injured|hurt|bleeding|wounded|unconscious)\b"),
    re.compile(r"\b(?:shock|shocks|shocked|electrocuted|electrocution|sparks?|sparking|"
               r"arcing|live wires?)\b"),
    re.compile(r"\b(?:explosion|exploded|explode|gas leak|leaking gas|toxic|fumes|unsafe|"
               r"dangerous)\b"),
)
"""Patterns of lower-cased caller speech that mean someone may get hurt."""


@dataclass(frozen=True)
class PriorityDecision:
    priority: Priority
    reasons: tuple[str, ...]
    """How the priority came about, in order, for the ticket and the helpdesk."""


def best_candidate(candidates: Sequence[Candidate]) -> Candidate | None:
    return max(candidates, key=lambda c: c.score, default=None)


def find_cue(patterns: Sequence[re.Pattern[str]], turns: Sequence[Turn]) -> str | None:
    """The first phrase of the caller's turns that matches one of `patterns`."""
    for turn in turns:
        if turn.speaker != CALLER:
            continue
        text = turn.text.lower()
        for pattern in patterns:
            match = pattern.search(text)
            if match:
                return match.group(0)
    return None


def decide_priority(candidates: Sequence[Candidate], transcript: Sequence[Turn],
                    default: Priority) -> PriorityDecision:
    """The ticket's priority from its best candidate and the caller's urgency cues."""
    best = best_candidate(candidates)
    if best is not None and best.priority is not None:
        priority = best.priority
        reasons = [f"FAQ {best.faq_id} has priority {priority}"]
    else:
        priority = default
        reasons = [f"default priority {priority}"]
    production = find_cue(PRODUCTION_CUES, transcript)
    if production is not None:
        raised = min(priority.raised(), PRODUCTION_FLOOR)  # P1 < P2 as strings, too
        reasons.append(f"production stopped ({production!r}): {priority} -> {raised}")
        priority = raised
    safety = find_cue(SAFETY_CUES, transcript)
    if safety is not None:
        reasons.append(f"safety ({safety!r}): {priority} -> {Priority.P1}")
        priority = Priority.P1
    return PriorityDecision(priority, tuple(reasons))


def sla_due(created_at: float, priority: Priority, sla: SlaHours) -> float:
    """When a ticket of `priority` opened at `created_at` must have been dealt with."""
    return created_at + sla.hours(priority) * SECONDS_PER_HOUR
