"""A drill's report: what it did, what each test call found, and the result.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any

from trunks.overrides import Override


class Result(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"



@dataclass
class DrillReport:
    id: str
    trunk: str
    number: str
    node: str
    by: str
    trigger: str
    """"cli" or "schedule"."""
    started_at: float
    ended_at: float | None = None
    result: Result = Result.FAILED
    calls: list[dict[str, Any]] = field(default_factory=list)
    """One entry per test call: number, trunk, setup, setup_ms, audio_in, audio_out,
    dtmf, ok, error."""
    overrides_before: dict[str, str | None] = field(default_factory=dict)
    overrides_after: dict[str, str | None] = field(default_factory=dict)
    restored: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DrillReport:
        data = json.loads(text)
        data["result"] = Result(data["result"])
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def to_text(self) -> str:
        def when(at: float | None) -> str:
            return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S %Z",
                                                        time.localtime(at))

        passed = sum(1 for c in self.calls if c.get("ok"))
        lines = [f"Drill {self.id}: {self.result.value.upper()}",
                 f"  trunk {self.trunk}, calling {self.number}, on node {self.node}, "
                 f"by {self.by} ({self.trigger})",
                 f"  started {when(self.started_at)}, ended {when(self.ended_at)}",
                 f"  calls: {passed} of {len(self.calls)} passed"]
        for c in self.calls:
            checks = " ".join(f"{name}={'ok' if c.get(name) else 'FAIL'}"
                              for name in ("setup", "audio_in", "audio_out", "dtmf"))
            setup = f" in {c['setup_ms']:.0f} ms" if c.get("setup_ms") is not None else ""
            lines.append(f"    #{c['number']}: {checks}{setup}"
                         + (f" - {c['error']}" if c.get("error") else ""))
        lines.append("  overrides before: " + _overrides_text(self.overrides_before))
        lines.append("  overrides after:  " + _overrides_text(self.overrides_after))
        lines.append(f"  state restored: {'yes' if self.restored else 'NO'}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _overrides_text(overrides: dict[str, str | None]) -> str:
    return ", ".join(f"{t}: {o or 'none'}" for t, o in sorted(overrides.items())) or "none"


def describe(override: Override | None) -> str | None:
    """How a report shows an override."""
    return None if override is None else f"{override.action.value} ({override.reason})"


__all__ = ["DrillReport", "Result", "describe"]
