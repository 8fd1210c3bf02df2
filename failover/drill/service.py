"""Drills inside `hotline serve`: requests from `hotline drill run` (through Redis),
the monthly schedule, and the responder for drill calls coming back in.

Every node runs the schedule, so each scheduled time (a *slot*) is claimed in Redis
before its drill: the first node to fire for it drills, and a node firing for the same
time later (its clock behind, or its job late by up to `SCHEDULE_GRACE_S`) finds the
slot taken and skips it. The slot is the schedule's time, worked out from the trigger
and this node's clock, not the moment the job runs; APScheduler 3 does not pass its
scheduled run time to the job. A slot stays taken whatever became of its drill (a node
that dies mid-drill leaves it to the lock's expiry and `Drill.recover`).

Whether a call coming in is a drill's is decided before its flow starts, so the
drill's lock is read through a `LastKnown`: a hung Redis delays that call by at most
`claim_wait_s`, after which the last lock holder read decides.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from apscheduler.triggers.base import BaseTrigger

from failover.config import DrillSettings
from failover.drill.calls import CallCheck, Responder, check_call
from failover.drill.report import DrillReport
from failover.drill.run import Drill, DrillRefused, new_id
from failover.drill.store import DrillStore
from failover.router import Need, Router
from trunks.bounded import WAIT_S, LastKnown
from trunks.store import TrunkStore
from trunks.voip.inbound import InboundCall

logger = logging.getLogger(__name__)

RECOVER_EVERY_S = 60.0
"""How often a node looks for a drill that a dead node left half done."""
SCHEDULE_GRACE_S = 3600
"""A scheduled drill may start this many seconds late (its node busy or paused);
APScheduler skips a later one (`misfire_grace_time`, a whole number)."""
SLOT_KEEP_S = 7 * 86400.0
"""How long a taken slot is kept in Redis: far beyond any late fire for it."""
_SLOT_SEARCH_S = SCHEDULE_GRACE_S + 60.0
"""How far back the job looks for its scheduled time: the grace, and a minute for the
job to start after the scheduler decided to run it."""


def latest_fire_time(trigger: BaseTrigger, now: datetime.datetime,
                     within_s: float = _SLOT_SEARCH_S) -> datetime.datetime | None:
    """The latest time `trigger` fires at or before `now`, no more than `within_s`
    earlier; None if it does not fire in that window."""
    fire = trigger.get_next_fire_time(None, now - datetime.timedelta(seconds=within_s))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, now)
    return cast(datetime.datetime | None, latest)


def slot_name(moment: datetime.datetime) -> str:
    """A scheduled time as every node names it, whatever its time zone: UTC, to the second."""
    return moment.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


class DrillService:
    """Drills on this node: requests from `hotline drill run`, the schedule, and the
    responder for drill calls coming back in."""

    def __init__(self, drills: DrillStore, trunks: TrunkStore, dialer: Router,
                 settings: DrillSettings, *, default_trunk: str, trunk_names: list[str],
                 node: str, reports_dir: Path,
                 on_report: Callable[[DrillReport], None] | None = None,
                 claim_wait_s: float = WAIT_S,
                 wallclock: Callable[[], float] = time.time) -> None:
        """`claim_wait_s`: how long a call coming in waits for Redis to say whether a
        drill runs; `wallclock`: the time the schedule's slots are worked out from."""
        assert settings.number is not None
        self.drill = Drill(drills, trunks, trunk_names, self.test_call, node=node,
                           number=settings.number, lock_s=settings.lock_s, keep=settings.keep,
                           reports_dir=reports_dir, on_report=on_report, wallclock=wallclock)
        self.drills, self.dialer = drills, dialer
        self.settings = settings
        self.trigger = settings.trigger()
        self._wallclock = wallclock
        self.default_trunk = default_trunk
        self.responder = Responder(settings.step_s)
        self._holder = LastKnown("Drill lock", drills.holder, wait_s=claim_wait_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_requests, name="drill-requests",
                                        daemon=True)

    def start(self) -> None:
        self._holder.start()
        try:
            self.drill.recover()
        except redis.RedisError as exc:  # the requests' thread tries again every minute
            logger.warning("Drills: what a dead node's drill left is restored once Redis "
                           "answers (%s)", exc)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests; a running drill is interrupted and restores state."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._holder.stop()

    def claims(self, call: InboundCall) -> bool:
        """Whether `call` is one of our drill calls coming back in (while a drill runs)."""
        number = self.settings.number
        if number is None or call.caller != self.settings.caller_id:
            return False
        if call.called.lstrip("+") != number.lstrip("+"):
            return False
        return self._holder.get().value is not None

    def scheduled(self, at: datetime.datetime | None = None) -> None:
        """The schedule's job: run the drill of the scheduled time `at` (default: the
        schedule's latest up to now), unless a node already took that time or another
        drill is running."""
        now = datetime.datetime.fromtimestamp(self._wallclock(), datetime.UTC)
        if at is None and self.trigger is not None:
            at = latest_fire_time(self.trigger, now)
        if at is None:
            logger.warning("Scheduled drill not run: the schedule (%s) has no time in the "
                           "last %g s", self.settings.schedule, _SLOT_SEARCH_S)
            return
        slot, drill_id = slot_name(at), new_id(self._wallclock)
        try:
            if not self.drills.claim_slot(slot, f"drill {drill_id} on node {self.drill.node}",
                                          SLOT_KEEP_S):
                logger.info("Scheduled drill of %s skipped (%.0f s after it): taken by %s",
                            slot, (now - at).total_seconds(), self.drills.slot_taker(slot))
                return
            self.run(self.default_trunk, self.settings.calls, by="schedule",
                     trigger="schedule", drill_id=drill_id)
        except DrillRefused as exc:
            logger.info("Scheduled drill skipped: %s", exc)
        except redis.RedisError as exc:
            logger.error("Scheduled drill not run: Redis unreachable: %s", exc)

    def run(self, trunk: str, calls: int, **kwargs: Any) -> DrillReport:
        settings = self.settings  # the lock outlives the longest the calls can take
        longest = calls * (settings.ring_s + 5 + 3 * settings.step_s) + 60
        return self.drill.run(trunk, calls, stop=self._stop, lock_s=longest, **kwargs)

    def test_call(self, n: int, trunk: str, cancelled: Callable[[], bool]) -> dict[str, Any]:
        check = CallCheck(n, trunk)
        placed = self.dialer.dial(cast(str, self.settings.number), self.settings.ring_s,
                                  frozenset(), Need.DRILL, only=trunk,
                                  caller_id=self.settings.caller_id)
        if placed is None:
            plan = self.dialer.plan(Need.DRILL, only=trunk)
            check.error = f"no route: {plan.left_out.get(trunk, 'trunk not usable')}"
            return check.to_dict()
        return check_call(placed[1], check, self.settings.ring_s, self.settings.step_s,
                          cancelled).to_dict()

    def _serve_requests(self) -> None:
        next_recovery = time.monotonic() + RECOVER_EVERY_S
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + RECOVER_EVERY_S
                    self.drill.recover()
                request = self.drills.next_request(1.0)
            except redis.RedisError as exc:
                logger.warning("Drill requests: Redis unreachable: %s", exc)
                self._stop.wait(2.0)
                continue
            if request is not None:
                self._answer(request)

    def _answer(self, request: dict[str, Any]) -> None:
        drill_id = request["id"]

        def progress(text: str) -> None:
            with contextlib.suppress(redis.RedisError):
                self.drills.event(drill_id, "progress", text=text)

        try:
            progress(f"taken by node {self.drill.node}")
            report = self.run(request.get("trunk") or self.default_trunk,
                              request.get("calls") or self.settings.calls,
                              by=request.get("by") or "cli", drill_id=drill_id,
                              progress=progress)
            self.drills.event(drill_id, "done", report=json.loads(report.to_json()))
        except DrillRefused as exc:
            self.drills.event(drill_id, "refused", text=str(exc))
        except Exception as exc:  # the CLI waiting must hear of any failure
            logger.exception("Drill %s failed", drill_id)
            with contextlib.suppress(redis.RedisError):
                self.drills.event(drill_id, "error", text=f"{type(exc).__name__}: {exc}")


__all__ = ["SCHEDULE_GRACE_S", "DrillService", "latest_fire_time", "slot_name"]
