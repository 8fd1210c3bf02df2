"""A drill's test call, both ends: the caller (`check_call`) and the responder.

The drill calls the hotline's own number out through the trunk under test; the
carrier routes it back in, and the responder answers it. One call proves the
path both ways:

1. set-up: the call is answered;
2. audio in: the responder plays a steady READY_HZ tone from the moment it
   answers, and the caller hears it;
3. audio out: the caller plays PROBE_HZ; the responder answers with ACK_HZ only
   once it has heard that, so the caller hearing ACK_HZ proves its audio arrived;
4. DTMF: the caller sends random digits and '#' (RFC 4733); the responder sends
   the same digits back, and the caller compares them.

The tones avoid the DTMF frequencies, and each must last 200 ms unbroken.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import redis

from failover.config import DrillSettings
from failover.drill import Drill, DrillRefused, DrillReport, DrillStore
from failover.router import Need, Router
from speech import g711
from speech.prompts import PCMU, encode
from speech.synthesizer import Samples
from speech.tones import ToneDetector, tone
from trunks.store import TrunkStore
from trunks.voip.inbound import InboundCall
from trunks.voip.media import RtpStream
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

READY_HZ = 1800.0
PROBE_HZ = 1004.0
ACK_HZ = 2400.0
TOKEN_DIGITS = 6
TONE_CHUNK_S = 1.0
"""Tones are queued a second at a time, so a stop takes effect within a second."""
FRAME_WAIT_S = 0.05
RECOVER_EVERY_S = 60.0
"""How often a node looks for a drill that a dead node left half done."""


@dataclass
class CallCheck:
    """What one drill call proved; `ok` when every check passed."""

    number: int
    trunk: str | None = None
    setup: bool = False
    setup_ms: float | None = None
    status: int | None = None
    audio_in: bool = False
    audio_out: bool = False
    dtmf: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.setup and self.audio_in and self.audio_out and self.dtmf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_call(leg: OutboundCall, check: CallCheck, ring_s: float, step_s: float,
               cancelled: Callable[[], bool], clock: Callable[[], float] = time.monotonic
               ) -> CallCheck:
    """Run the drill protocol on `leg` (just placed), filling in `check`; always hangs up."""
    started = clock()
    try:
        outcome = Outcome.PENDING
        while outcome is Outcome.PENDING and not cancelled() and clock() - started < ring_s + 5:
            outcome = leg.wait(0.1)
        check.status = leg.status
        if outcome is not Outcome.ANSWERED:
            check.error = ("interrupted while ringing" if cancelled() else
                           f"set-up {outcome}: {leg.reason or leg.status or 'no reply'}")
            return check
        check.setup, check.setup_ms = True, round((clock() - started) * 1000, 1)
        media = leg.media
        if not _hear(media, ToneDetector(READY_HZ), step_s, cancelled, clock):
            check.error = "did not hear the responder's tone (audio from the far side)"
            return check
        check.audio_in = True
        if not _hear(media, ToneDetector(ACK_HZ), step_s, cancelled, clock,
                     play=tone(PROBE_HZ, TONE_CHUNK_S)):
            check.error = "the responder did not hear our tone (audio to the far side)"
            return check
        check.audio_out = True
        token = "".join(secrets.choice("0123456789") for _ in range(TOKEN_DIGITS))
        media.send_digits(token + "#")
        echoed = _digits(media, step_s, cancelled, clock)
        check.dtmf = echoed == token
        if not check.dtmf:
            check.error = f"sent digits {token}, got back {echoed or 'nothing'}"
        return check
    finally:
        if cancelled() and check.error is None and not check.ok:
            check.error = "interrupted"
        leg.hangup()


def _hear(media: RtpStream, detector: ToneDetector, seconds: float,
          cancelled: Callable[[], bool], clock: Callable[[], float],
          play: Samples | None = None) -> bool:
    """Wait up to `seconds` for `detector`'s tone, playing `play` over and over meanwhile."""
    deadline = clock() + seconds
    try:
        while clock() < deadline and not cancelled():
            if play is not None and not media.playing:
                media.play(encode(play, media.payload_type))
            frame = media.read(FRAME_WAIT_S)
            if frame is not None and detector.push(_decode(frame, media.payload_type)):
                return True
        return False
    finally:
        media.flush()


def _digits(media: RtpStream, seconds: float, cancelled: Callable[[], bool],
            clock: Callable[[], float]) -> str | None:
    """Digits received up to '#', or None if the '#' does not come in time."""
    deadline = clock() + seconds
    digits = ""
    while clock() < deadline and not cancelled():
        while media.read(0) is not None:  # keep the audio queue from filling up
            pass
        try:
            digit = media.digits.get(timeout=FRAME_WAIT_S)
        except queue.Empty:
            continue
        if digit == "#":
            return digits
        digits += digit
    return digits or None


def _decode(frame: bytes, payload_type: int) -> Samples:
    return g711.ulaw_decode(frame) if payload_type == PCMU else g711.alaw_decode(frame)


class Responder:
    """Answers drill calls: the far end of `check_call`."""

    def __init__(self, step_s: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.step_s = step_s
        self._clock = clock

    def __call__(self, call: InboundCall) -> str:
        """Run the far end of the protocol on an answered call; return what happened."""
        media = call.media
        ended = call.ended.is_set
        heard = _hear(media, ToneDetector(PROBE_HZ), self.step_s * 2, ended, self._clock,
                      play=tone(READY_HZ, TONE_CHUNK_S))
        if not heard:
            return "drill responder: the caller's tone never came"
        media.play(encode(tone(ACK_HZ, 1.0), media.payload_type))
        digits = _digits(media, self.step_s * 2, ended, self._clock)
        if digits is None:
            return "drill responder: heard the tone; no digits"
        media.send_digits(digits + "#")
        call.ended.wait(self.step_s)  # the caller hangs up once it has the digits
        return f"drill responder: heard the tone, echoed {len(digits)} digits"




class DrillService:
    """Drills on this node: requests from `hotline drill run`, the schedule, and the
    responder for drill calls coming back in."""

    def __init__(self, drills: DrillStore, trunks: TrunkStore, dialer: Router,
                 settings: DrillSettings, *, default_trunk: str, trunk_names: list[str],
                 node: str, reports_dir: Path,
                 on_report: Callable[[DrillReport], None] | None = None) -> None:
        assert settings.number is not None
        self.drill = Drill(drills, trunks, trunk_names, self.test_call, node=node,
                           number=settings.number, lock_s=settings.lock_s, keep=settings.keep,
                           reports_dir=reports_dir, on_report=on_report)
        self.drills, self.dialer = drills, dialer
        self.settings = settings
        self.default_trunk = default_trunk
        self.responder = Responder(settings.step_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_requests, name="drill-requests",
                                        daemon=True)

    def start(self) -> None:
        self.drill.recover()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests; a running drill is interrupted and restores state."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def claims(self, call: InboundCall) -> bool:
        """Whether `call` is one of our drill calls coming back in (while a drill runs)."""
        number = self.settings.number
        if number is None or call.caller != self.settings.caller_id:
            return False
        if call.called.lstrip("+") != number.lstrip("+"):
            return False
        try:
            return self.drills.holder() is not None
        except redis.RedisError:
            return False

    def scheduled(self) -> None:
        """The schedule's job: run a drill unless another node already is."""
        try:
            self.run(self.default_trunk, self.settings.calls, by="schedule",
                     trigger="schedule")
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


__all__ = ["CallCheck", "DrillService", "Responder", "check_call"]
