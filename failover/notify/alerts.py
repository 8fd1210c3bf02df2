"""What the hotline tells people about: trunk outages and recoveries, and drill results.

`TrunkAlerts` listens to the trunk monitor's state changes (on its thread, so it
only keeps its own view of the states and queues alerts). With several nodes each
monitor reports; the notifier's dedupe in Redis sends each event once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from failover.drill.report import DrillReport, Result
from failover.notify.alert import Alert, AlertKind
from trunks.health import Transition, TrunkState


class TrunkAlerts:
    """Alerts for a trunk going DOWN, coming back UP, and every trunk being DOWN."""

    def __init__(self, send: Callable[[Alert], None], trunks: Sequence[str]) -> None:
        self.send = send
        self._states = {name: TrunkState.UNKNOWN for name in trunks}

    def __call__(self, transition: Transition) -> None:
        name, new = transition.trunk, transition.new
        self._states[name] = new
        details = {"trunk": name, "old": transition.old.value, "new": new.value,
                   "at": transition.at, "reason": transition.reason}
        if new is TrunkState.DOWN:
            others = [n for n, s in self._states.items() if n != name and s is TrunkState.UP]
            self.send(Alert(AlertKind.TRUNK_DOWN, f"trunk-down:{name}",
                            f"Hotline trunk {name} is down ({transition.reason}). "
                            + (f"Calls now go through {', '.join(others)}." if others else ""),
                            details=details))
            if all(s is TrunkState.DOWN for s in self._states.values()):
                self.send(Alert(AlertKind.ALL_TRUNKS_DOWN, "all-trunks-down",
                                "Every hotline SIP trunk is down: callers cannot reach the "
                                "hotline and nobody can be forwarded. Check the carriers now.",
                                urgent=True, details={"trunks": sorted(self._states)}))
        elif new is TrunkState.UP and transition.old in (TrunkState.RECOVERING,
                                                         TrunkState.DOWN):
            self.send(Alert(AlertKind.TRUNK_UP, f"trunk-up:{name}",
                            f"Hotline trunk {name} is back up ({transition.reason}).",
                            details=details))


def drill_alert(report: DrillReport) -> Alert:
    """The alert that carries a drill's result."""
    passed = sum(1 for c in report.calls if c.get("ok"))
    if report.result is Result.PASSED:
        return Alert(AlertKind.DRILL_PASSED, f"drill:{report.id}",
                     f"Hotline drill on {report.trunk} passed: {passed} of "
                     f"{len(report.calls)} test calls worked both ways.",
                     details={"report": report.to_text()})
    first = next((c.get("error") for c in report.calls if c.get("error")), None)
    why = first or "; ".join(report.problems) or "no test call was placed"
    return Alert(AlertKind.DRILL_FAILED, f"drill:{report.id}",
                 f"Hotline drill on {report.trunk} {report.result.value}: {passed} of "
                 f"{len(report.calls)} test calls worked. {why}. Trunks restored: "
                 f"{'yes' if report.restored else 'NO'}.", details={"report": report.to_text()})


__all__ = ["TrunkAlerts", "drill_alert"]
