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

import logging
import queue
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from speech import g711
from speech.prompts import PCMU, encode
from speech.synthesizer import Samples
from speech.tones import ToneDetector, tone
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


__all__ = ["CallCheck", "Responder", "check_call"]
