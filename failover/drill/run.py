"""One drill: take the lock, record the overrides, force the drill's trunk, place the
test calls, put everything back, keep the report (the steps: see `failover.drill`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from failover.drill.report import DrillReport, Result, describe
from failover.drill.store import DrillStore
from trunks.overrides import Override, OverrideAction
from trunks.store import TrunkStore

logger = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.5
"""How often a running drill looks for a cancel request in Redis."""
BY = "drill"


class DrillRefused(Exception):
    """Another drill holds the lock; `str()` says which."""


TestCall = Callable[[int, str, Callable[[], bool]], dict[str, Any]]
"""Place test call number n through a trunk and check it: (n, trunk, cancelled) -> a
dict with at least "ok" and "error"."""


def new_id(clock: Callable[[], float] = time.time) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock())) + "-" + secrets.token_hex(3)


class Drill:
    """Runs drills on this node; thread-safe (one drill at a time, by the lock)."""

    def __init__(self, drills: DrillStore, trunks: TrunkStore, trunk_names: list[str],
                 test_call: TestCall, *, node: str, number: str, lock_s: float, keep: int,
                 reports_dir: Path, on_report: Callable[[DrillReport], None] | None = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.drills, self.trunks = drills, trunks
        self.trunk_names = trunk_names
        self.test_call = test_call
        self.node, self.number = node, number
        self.lock_s, self.keep = lock_s, keep
        self.reports_dir = reports_dir
        self.on_report = on_report
        self._wallclock = wallclock

    def run(self, trunk: str, calls: int, *, by: str = BY, trigger: str = "cli",
            drill_id: str | None = None, stop: threading.Event | None = None,
            progress: Callable[[str], None] | None = None,
            lock_s: float | None = None) -> DrillReport:
        """Run one drill through `trunk` with `calls` test calls, holding the lock and the
        override for `lock_s` (default: the configured; give at least the drill's longest
        possible duration); raise DrillRefused if another drill is running,
        redis.RedisError if Redis fails before anything changed."""
        drill_id = drill_id or new_id(self._wallclock)
        say = progress or (lambda text: None)
        ttl = max(lock_s or 0.0, self.lock_s)
        if not self.drills.acquire(drill_id, ttl):
            holder = self.drills.holder()
            raise DrillRefused(f"drill {holder} is running; only one drill at a time")
        report = DrillReport(drill_id, trunk, self.number, self.node, by, trigger,
                             self._wallclock())
        try:
            self._recover(report, say)
            self._drill(report, calls, stop or threading.Event(), say, ttl)
        finally:
            self._restore(report, say)
            report.ended_at = self._wallclock()
            self._finish(report, say)
        return report

    def recover(self) -> None:
        """Restore what a drill on a node that died left behind, once its lock has expired
        (run at start-up and every minute or so)."""
        if self.drills.holder() is None and self.drills.state() is not None:
            drill_id = new_id(self._wallclock)
            if self.drills.acquire(drill_id, self.lock_s):
                try:
                    self._recover(None, lambda text: logger.warning("%s", text))
                finally:
                    self.drills.release(drill_id)

    def _recover(self, report: DrillReport | None, say: Callable[[str], None]) -> None:
        state = self.drills.state()
        if state is None:
            return
        trunk, before = state["trunk"], state["before"]
        restored = self._put_back(trunk, before, state["id"])
        self.drills.clear_state()
        text = (f"{'restored' if restored else 'left (an operator changed it since)'} {trunk} "
                f"as drill {state['id']} on node {state['node']} had left it (that drill did "
                "not finish)")
        say(text)
        if report is not None:
            report.problems.append(text)
        old = self.drills.report(state["id"])
        if old is None:
            old = DrillReport(state["id"], trunk, self.number, state["node"], state["by"],
                              state["trigger"], state["started_at"], result=Result.INTERRUPTED,
                              problems=["the node running it stopped mid-drill"])
        old.restored = True
        old.overrides_before = state["overrides"]
        old.overrides_after = self._overrides()
        self.drills.save_report(old, self.keep)

    def _drill(self, report: DrillReport, calls: int, stop: threading.Event,
               say: Callable[[str], None], ttl: float) -> None:
        report.overrides_before = self._overrides()
        previous = self.trunks.get_override(report.trunk)
        if previous is not None and previous.action is OverrideAction.DRAIN:
            report.problems.append(
                f"{report.trunk} is drained by {previous.by} ({previous.reason}): the drill "
                "does not force live calls onto a trunk taken out of service; nothing changed")
            say(report.problems[-1])
            return
        self.drills.save_state({
            "id": report.id, "node": self.node, "by": report.by, "trigger": report.trigger,
            "started_at": report.started_at, "trunk": report.trunk,
            "overrides": report.overrides_before,
            "before": None if previous is None else dataclasses.asdict(previous)})
        now = self._wallclock()
        self.trunks.set_override(Override(report.trunk, OverrideAction.FORCE,
                                          f"drill {report.id}", report.by, now, now + ttl))
        say(f"forced {report.trunk} (was {describe(previous) or 'no override'})")
        cancelled = self._cancelled(report.id, stop)
        for n in range(1, calls + 1):
            if cancelled():
                break
            if not self.drills.extend(report.id, ttl):
                report.problems.append("the drill's lock expired: another node may act on "
                                       "the trunks now; stopped")
                break
            say(f"call {n} of {calls} through {report.trunk} to {self.number}")
            check = self.test_call(n, report.trunk, cancelled)
            report.calls.append(check)
            say(f"call {n}: {'ok' if check.get('ok') else 'FAILED: ' + str(check.get('error'))}")
        if cancelled():
            report.result = Result.INTERRUPTED
            report.problems.append("interrupted before the end")
        elif len(report.calls) == calls and all(c.get("ok") for c in report.calls):
            report.result = Result.PASSED

    def _cancelled(self, drill_id: str, stop: threading.Event) -> Callable[[], bool]:
        checked = [0.0, False]

        def cancelled() -> bool:
            if stop.is_set():
                return True
            now = time.monotonic()
            if not checked[1] and now - float(checked[0]) >= CANCEL_CHECK_S:
                checked[0] = now
                # Redis failing: keep drilling; the restore in `run` retries Redis anyway
                with contextlib.suppress(redis.RedisError):
                    checked[1] = self.drills.cancelled(drill_id)
            return bool(checked[1])

        return cancelled

    def _restore(self, report: DrillReport, say: Callable[[str], None]) -> None:
        """Put the drill trunk's override back as recorded; retry a failing Redis a while,
        since leaving a drill override in force is the one thing a drill must not do."""
        state = None
        for attempt in range(20):
            try:
                state = self.drills.state()
                if state is None or state["id"] != report.id:
                    return  # the drill failed before it changed anything
                if not self._put_back(report.trunk, state["before"], report.id):
                    report.problems.append(
                        f"the override of {report.trunk} was changed during the drill; left "
                        "as it is now")
                self.drills.clear_state()
                report.overrides_after = self._overrides()
                report.restored = True
                changed = sorted(t for t in report.overrides_before
                                 if t != report.trunk and report.overrides_after.get(t)
                                 != report.overrides_before[t])
                if changed:
                    report.problems.append(
                        f"overrides of {', '.join(changed)} changed during the drill; left as "
                        "they are now")
                now = describe(self.trunks.get_override(report.trunk))
                say(f"restored {report.trunk} to {now or 'no override'}")
                return
            except redis.RedisError as exc:
                logger.error("Drill %s: cannot restore overrides yet (attempt %d): %s",
                             report.id, attempt + 1, exc)
                time.sleep(min(0.5 * 2 ** attempt, 5.0))
        report.problems.append(f"could not restore {report.trunk}: Redis unreachable; the "
                               "drill's override expires by itself with the drill's lock")

    def _put_back(self, trunk: str, before: dict[str, Any] | None, drill_id: str) -> bool:
        """Put `trunk`'s override back to `before`, unless someone replaced the drill's
        since (an operator's later action stands); False if it was left."""
        current = self.trunks.get_override(trunk)
        if current is not None and current.reason != f"drill {drill_id}":
            return False
        if before is None:
            if current is not None:
                self.trunks.clear_override(trunk, BY, "drill finished: back as before")
        else:
            self.trunks.set_override(Override(**{**before, "action": OverrideAction(
                before["action"])}))
        return True

    def _overrides(self) -> dict[str, str | None]:
        found = self.trunks.overrides(self.trunk_names)
        return {name: describe(found.get(name)) for name in self.trunk_names}

    def _finish(self, report: DrillReport, say: Callable[[str], None]) -> None:
        if not report.restored and report.result is Result.PASSED:
            report.result = Result.FAILED
        try:
            self.reports_dir.mkdir(parents=True, exist_ok=True)
            (self.reports_dir / f"{report.id}.json").write_text(report.to_json() + "\n")
            (self.reports_dir / f"{report.id}.txt").write_text(report.to_text() + "\n")
        except OSError as exc:
            report.problems.append(f"report not written under {self.reports_dir}: {exc}")
        try:
            self.drills.save_report(report, self.keep)
            self.drills.release(report.id)
        except redis.RedisError as exc:
            logger.error("Drill %s: report not saved in Redis: %s", report.id, exc)
        logger.info("Drill %s %s\n%s", report.id, report.result.value, report.to_text())
        if self.on_report is not None:
            self.on_report(report)
        say(f"drill {report.result.value}")


__all__ = ["Drill", "DrillRefused", "TestCall", "new_id"]
