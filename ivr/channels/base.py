"""What a flow does with a call, whatever carries it: `Channel`, and the values it
hands back (`Heard`, `Dialled`) or raises (`CallEnded`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from speech.recognizer import Recognizer
from speech.synthesizer import Samples
from trunks.voip.outbound import OutboundCall, Outcome


class CallEnded(Exception):
    """The call ended (the caller hung up, say); the flow stops. The argument, if any,
    says why."""


@dataclass(frozen=True)
class Dialled:
    """How a call a channel placed itself to a person went."""

    outcome: Outcome
    trunk: str
    status: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Heard:
    """What the caller answered a prompt with: words, a key, or nothing."""

    text: str = ""
    digit: str | None = None

    @property
    def nothing(self) -> bool:
        return not self.text.strip() and self.digit is None


class Channel(abc.ABC):
    """What a flow does with a call."""

    dials_out: ClassVar[bool] = False
    """Whether the channel places forwarded calls itself (`dial`); otherwise the runner
    places them through the trunks and hands them to `ring` and `bridge`."""

    @abc.abstractmethod
    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Play 8 kHz audio to the end; with `barge_in`, stop at a digit and return it."""

    @abc.abstractmethod
    def wait_digit(self, timeout: float) -> str | None:
        """The next DTMF digit within `timeout` seconds, or None."""

    @abc.abstractmethod
    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        """Play `samples` (if any) and hear the caller's answer: speaking or a key stops
        the prompt (barge-in); then one turn of speech, a key, or nothing in time."""

    @abc.abstractmethod
    def ring(self, leg: OutboundCall, seconds: float) -> Outcome:
        """Let the caller hear ringback (or the callee's early media) until `leg` is
        answered or fails; return its outcome."""

    @abc.abstractmethod
    def bridge(self, leg: OutboundCall) -> None:
        """Connect the caller and the answered `leg` both ways until `leg` hangs up."""

    @abc.abstractmethod
    def hangup(self) -> None:
        """End the call."""

    def leg_quality(self, leg: OutboundCall) -> dict[str, float | int | None] | None:
        """How `leg` sounded both ways (`LegQuality.as_dict()`), for the call record;
        None from a channel that does not carry the audio itself."""
        return None

    def dial(self, number: str, ring_s: float) -> Dialled:
        """For a channel that `dials_out`: ring `number` for up to `ring_s` while the
        caller hears ringback; when answered, connect the two until either hangs up."""
        raise TypeError(f"{type(self).__name__} does not dial out")

    def leave_message(self, samples: Samples, recognizer: Recognizer,
                      max_s: int) -> str | None:
        """Play `samples`, record the caller's message (at most `max_s` seconds) and
        transcribe it; None when the channel takes no messages (a SIP call: the voice
        bot has heard the caller already)."""
        return None


__all__ = ["CallEnded", "Channel", "Dialled", "Heard"]
