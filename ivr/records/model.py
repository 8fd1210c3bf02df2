"""A call's record: what happened on one call, step by step, as saved in Redis."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ANSWERED = "answered"
"""A forward attempt's outcome once the person answered (`Outcome.ANSWERED`)."""

LegQualities = tuple[dict[str, Any] | None, dict[str, Any] | None]
"""A live call's quality figures (`LegQuality.as_dict()`): the caller's leg, and the
staff leg it is bridged to (None when it is not)."""


@dataclass
class CallRecord:
    id: str
    trunk: str
    caller: str
    called: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    path: list[str] = field(default_factory=list)
    """The flow's nodes, in the order the call visited them."""
    digits: str = ""
    forwarded_to: str | None = None
    """The on-call person (their key in oncall.yaml) who took the call."""
    forward_attempts: list[dict[str, Any]] = field(default_factory=list)
    """Each call placed to a person: person, trunk, outcome, status, reason."""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    """The voice bot's conversation: speaker ("caller" or "bot"), text, at (epoch s)."""
    bot_turns: list[dict[str, Any]] = field(default_factory=list)
    """Each question the bot searched for: text, decision, id, confidence, elapsed_ms,
    candidates, and whether the answer helped."""
    ticket: str | None = None
    """The id of the ticket the bot opened."""
    outcome: str | None = None
    end_reason: str | None = None
    callback: str | None = None
    """For a call cut off: the call-back scheduled for it, or the ticket opened instead."""
    callback_of: str | None = None
    """For a call-back: the id of the call that was cut off."""
    routing: dict[str, str] = field(default_factory=dict)
    """Trunks passed over while placing this call's forwards, and why ("DOWN since
    10:02", "drained by alice: carrier maintenance", "hold-down 40 s")."""
    quality: dict[str, Any] | None = None
    """How the caller's leg sounded, both ways (`LegQuality.as_dict()`: MOS, loss,
    jitter, round-trip time, RTCP reports); None where not measured (Twilio calls). An
    answered forward attempt has its staff leg's under "quality" too."""
    node: str | None = None
    """The hotline node that carried the call (its `node` setting); None in records
    written before nodes were recorded."""
    run: str | None = None
    """Which run of that node (its lease token: a restart is a new run), so the calls a
    crash or power loss left open can be told from the calls the node carries now."""
    moved: list[dict[str, Any]] = field(default_factory=list)
    """Each time the call moved to another node because its node died while it was
    bridged: from, to, at (epoch s), reinvite_s (how long the legs took to accept)."""

    def visit(self, node: str) -> None:
        """The call reached flow node `node`."""
        self.path.append(node)

    def add_forward_attempt(self, person: str, trunk: str, outcome: str,
                            status: int | str | None, reason: str | None) -> None:
        """A call placed to on-call `person` through `trunk` ended with `outcome`."""
        self.forward_attempts.append({"person": person, "trunk": trunk, "outcome": outcome,
                                      "status": status, "reason": reason})

    def note_forward_quality(self, quality: Mapping[str, Any] | None) -> None:
        """How the latest forward attempt's call sounded (None: not measured)."""
        if quality is not None and self.forward_attempts:
            self.forward_attempts[-1]["quality"] = dict(quality)

    def note_routing(self, notes: Mapping[str, str]) -> None:
        """Why trunks were passed over for a call placed now (latest reason per trunk)."""
        self.routing.update(notes)

    def add_turn(self, speaker: str, text: str, at: float | None) -> None:
        """One line of the voice bot's conversation: "caller" or "bot" said `text`."""
        self.transcript.append({"speaker": speaker, "text": text, "at": at})

    def add_search(self, text: str, decision: str, entry: str | None, confidence: float,
                   elapsed_ms: float, candidates: Sequence[str]) -> None:
        """The bot searched the FAQ for `text`: its decision, the entry, the best ids."""
        self.bot_turns.append({"text": text, "decision": decision, "id": entry,
                               "confidence": round(confidence, 3),
                               "elapsed_ms": round(elapsed_ms, 1),
                               "candidates": list(candidates)})

    def settle_search(self, entry: str, by: str) -> None:
        """The latest search ended in an answer after all, `by` "clarified" (the caller
        chose between two) or "confirmed" (the caller said yes to the best guess)."""
        self.bot_turns[-1].update(decision="answer", id=entry, **{by: True})

    def judge_search(self, helped: bool) -> None:
        """The caller said whether the latest search's answer helped."""
        self.bot_turns[-1]["helped"] = helped

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CallRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def measured_legs(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The legs of a finished record (as `dataclasses.asdict` gives it) that have a MOS,
    each with the trunk that carried it: the caller's, then each answered forward's (the
    person's key as the leg's name)."""
    legs = [(str(data["trunk"]), "caller", data.get("quality"))]
    legs += [(str(a["trunk"]), str(a["person"]), a.get("quality"))
             for a in data.get("forward_attempts", ())]
    return [(trunk, {"call": data["id"], "leg": leg, "at": data["ended_at"], **quality})
            for trunk, leg, quality in legs if quality and quality.get("mos") is not None]
