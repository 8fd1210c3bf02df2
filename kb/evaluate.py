"""Score the search on labelled caller turns (`hotline kb eval`, `hotline kb calibrate`).

The file is a YAML list of turns as a recognizer would write them:

    - text: "the screen says e zero one and the welder stopped"
      expect: alarm-e01-chiller-flow     # an FAQ id, or null: the bot must not answer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from kb.calibration import correct
from kb.errors import KbError
from kb.faq import Faq
from kb.search import Decision, Result, Searcher


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    expect: str | None


@dataclass(frozen=True)
class Report:
    turns: int
    in_scope: int
    top1: float
    """In-scope turns whose best candidate is the expected entry."""
    answered_right: float
    """In-scope turns answered with the expected entry."""
    rejection: float
    """Out-of-scope turns not answered."""
    overall: float
    clarified: int
    latency_p50_ms: float
    latency_p99_ms: float
    mistakes: list[dict[str, object]]

    def to_dict(self) -> dict[str, object]:
        return {"turns": self.turns, "in_scope": self.in_scope,
                "in_scope_top1": round(self.top1, 4),
                "in_scope_answered_right": round(self.answered_right, 4),
                "out_of_scope_rejection": round(self.rejection, 4),
                "overall": round(self.overall, 4), "clarified": self.clarified,
                "latency_ms": {"p50": round(self.latency_p50_ms, 2),
                               "p99": round(self.latency_p99_ms, 2)},
                "mistakes": self.mistakes}


def load_turns(path: Path, faq: Faq) -> list[Turn]:
    """Read a turns file; every expected id must be in `faq`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        turns = TypeAdapter(list[Turn]).validate_python(data)
    except OSError as exc:
        raise KbError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KbError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KbError(f"{path}: [{where}]: {first['msg']}") from None
    ids = {e.id for e in faq.entries}
    unknown = sorted({t.expect for t in turns if t.expect and t.expect not in ids})
    if unknown:
        raise KbError(f"{path}: expects ids the FAQ does not have: {', '.join(unknown)}")
    if not turns:
        raise KbError(f"{path}: no turns")
    return turns


def evaluate(searcher: Searcher, turns: list[Turn]) -> tuple[Report, list[Result]]:
    """Ask every turn; score decisions as `hotline kb eval` defines them."""
    results = [searcher.ask(turn.text) for turn in turns]
    top1, in_scope = labels(turns, [r.candidates[0].id for r in results])
    answered = np.array([r.decision is Decision.ANSWER for r in results])
    right = answered & top1
    ok = correct(answered, top1, in_scope)
    latency = np.array([r.elapsed_ms for r in results])
    mistakes: list[dict[str, object]] = [
        {"text": t.text, "expect": t.expect, "decision": str(r.decision),
         "best": r.candidates[0].id, "confidence": round(r.confidence, 3)}
        for t, r, good in zip(turns, results, ok, strict=True) if not good]
    report = Report(
        turns=len(turns), in_scope=int(in_scope.sum()),
        top1=_mean(top1[in_scope]), answered_right=_mean(right[in_scope]),
        rejection=_mean(~answered[~in_scope]), overall=float(ok.mean()),
        clarified=sum(r.decision is Decision.CLARIFY for r in results),
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p99_ms=float(np.percentile(latency, 99)), mistakes=mistakes)
    return report, results


def labels(turns: list[Turn], best: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per turn: whether `best` (the top entry's id) is the expected one, and whether
    any entry was expected (the turn is in scope)."""
    right = np.array([b == t.expect for b, t in zip(best, turns, strict=True)])
    return right, np.array([t.expect is not None for t in turns])


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
