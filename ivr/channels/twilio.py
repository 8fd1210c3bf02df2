"""A call hosted at Twilio as a flow's channel: each step that needs the caller becomes
one TwiML document, and the document's action request brings the answer back.

The webhooks that carry those requests are `ivr.http.twilio`; this module holds the
call's side: `TwilioCall` (the exchange of documents and requests), `TwilioChannel`
and the caller's recorded messages; the audio served to Twilio is `twilio_audio`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from twilio.twiml.voice_response import Gather, VoiceResponse  # type: ignore[import-untyped]

from ivr.channels.base import CallEnded, Channel, Dialled, Heard
from ivr.channels.twilio_audio import AudioStore
from ivr.settings import TwilioVoiceSettings
from speech.errors import AudioFileError, RecognizerError
from speech.prompts import TELEPHONE_RATE
from speech.recognizer import FRAME_BYTES, Recognizer
from speech.synthesizer import Samples, read_wav_bytes, resample
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

RESPONSE_WAIT_S = 10.0
"""How long a request waits for the flow's next document: under Twilio's 15 s."""
HOLD_S = 1
"""The pause of a "still working, ask again" document."""
INPUT_SLACK_S = 30.0
"""How long past a document's own timeouts the flow waits for Twilio's next request."""
BRIDGE_MAX_S = 4 * 3600.0
"""The longest a forwarded call is waited for."""
ACTION_GRACE_S = 15.0
"""How long a <Record> or <Dial> action is still waited for after the caller hangs up:
Twilio sends it and the status callback at about the same time, in either order."""
SPEECH_MAX_S = 60.0
"""The longest answer Twilio's speech <Gather> hears."""

RECORDING_WAIT_S = 10.0
"""How long a recording that Twilio has not stored yet (404) is asked for again."""
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
DIAL_OUTCOMES = {"completed": Outcome.ANSWERED, "answered": Outcome.ANSWERED,
                 "busy": Outcome.REFUSED, "no-answer": Outcome.REFUSED,
                 "canceled": Outcome.CANCELLED, "failed": Outcome.TRUNK_FAILED}
"""<Dial>'s DialCallStatus as the outcome a SIP forward would have had."""
DTMF = frozenset("0123456789*#")
_RECORDING_SID = re.compile(r"^RE[0-9a-fA-F]{32}$")
Params = dict[str, str]


class RecordingError(Exception):
    """A recording could not be fetched or read."""


class TwilioCall:
    """One call's documents and Twilio's answers to them, passed between the flow's
    thread and the request threads. Document n's action asks for ``seq=n``; the
    request with ``seq=n`` brings the answer to document n and takes document n+1
    (the call's first request is ``seq=0``)."""

    def __init__(self, sid: str, next_url: Callable[[int], str]) -> None:
        self.sid = sid
        self._next_url = next_url
        self._cond = threading.Condition()
        self._seq = 0
        self._documents: dict[int, str] = {}
        self._answers: dict[int, Params] = {}
        self._answered: set[int] = set()
        self.ended: str | None = None
        """Twilio's final CallStatus, once the status callback said the call ended."""
        self._ended_at = 0.0
        self.finished_at: float | None = None
        """When the flow finished (monotonic)."""
        self.saved = threading.Event()
        """Set once the flow's thread has saved the call's record for the last time."""

    # -- the flow's side

    def send(self, build: Callable[[str], VoiceResponse]) -> int:
        """Make the next document, built around its action URL; return its number."""
        with self._cond:
            self._seq += 1
            self._documents[self._seq] = str(build(self._next_url(self._seq)))
            self._documents.pop(self._seq - 3, None)
            self._cond.notify_all()
            return self._seq

    def receive(self, seq: int, timeout: float, grace: float = 0.0) -> Params:
        """Twilio's answer to document `seq`; CallEnded when the call ends first (or
        `grace` seconds after it ended) or Twilio stops asking within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._answers:
                if self.ended is not None:  # no grace when the server is stopping
                    deadline = min(deadline, self._ended_at + (
                        grace if self.ended in FINAL_STATUSES else 0.0))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CallEnded("Twilio stopped asking" if self.ended is None else
                                    "caller hung up" if self.ended in FINAL_STATUSES
                                    else self.ended)
                self._cond.wait(remaining)
            return self._answers.pop(seq)

    def finish(self, document: str | None = None) -> None:
        """The flow is done; `document` (if any) is the call's last."""
        with self._cond:
            if document is not None:
                self._seq += 1
                self._documents[self._seq] = document
            self.finished_at = time.monotonic()
            self._cond.notify_all()

    # -- the requests' side

    def respond(self, seq: int, params: Params) -> str:
        """The document for Twilio's request that answers document `seq`."""
        with self._cond:
            if seq == self._seq and seq not in self._answered and self.finished_at is None:
                self._answered.add(seq)
                self._answers[seq] = params
                self._cond.notify_all()
            self._cond.wait_for(lambda: seq + 1 in self._documents
                                or self.finished_at is not None or seq + 1 < self._seq,
                                RESPONSE_WAIT_S)
            if seq + 1 in self._documents:
                return self._documents[seq + 1]
            if self.finished_at is not None or seq + 1 < self._seq:
                logger.warning("Twilio call %s: request for step %d, which is over", self.sid,
                               seq)
                return hangup_twiml()
        response = VoiceResponse()  # the flow is busy: Twilio asks again after a pause
        response.pause(length=HOLD_S)
        response.redirect(self._next_url(seq))
        return str(response)

    def end(self, status: str) -> bool:
        """The status callback says the call ended: stop the flow. False when the flow
        had finished already."""
        with self._cond:
            if self.finished_at is not None:
                return False
            if self.ended is None:
                self.ended, self._ended_at = status, time.monotonic()
            self._cond.notify_all()
            return True


class TwilioChannel(Channel):
    """A call at Twilio, as the flow sees it (see the module's description)."""

    dials_out = True

    def __init__(self, call: TwilioCall, audio: AudioStore, audio_url: Callable[[str], str],
                 settings: TwilioVoiceSettings, recordings: Recordings,
                 no_input_s: float) -> None:
        self.call = call
        self._audio, self._audio_url = audio, audio_url
        self._settings = settings
        self._recordings = recordings
        self._no_input_s = no_input_s
        self._pending: list[tuple[str, bool, float]] = []
        """Plays not sent yet: URL, whether a key may interrupt it, seconds."""

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Queue `samples` for the next document; a key pressed during it reaches the
        next `wait_digit`."""
        if len(samples):
            self._pending.append((self._audio_url(self._audio.add(samples)), barge_in,
                                  len(samples) / TELEPHONE_RATE))
        return None

    def wait_digit(self, timeout: float) -> str | None:
        answer = self._gather("dtmf", timeout)
        digit = answer.get("Digits", "")[:1]
        return digit if digit in DTMF and digit else None

    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        """Twilio hears the caller (its own speech recognition, in `language`)."""
        if samples is not None:
            self.play(samples, barge_in=True)
        answer = self._gather("dtmf speech", self._no_input_s)
        digit = answer.get("Digits", "")[:1]
        if digit in DTMF and digit:
            return Heard(digit=digit)
        return Heard(text=answer.get("SpeechResult", "").strip())

    def ring(self, leg: OutboundCall, seconds: float) -> Outcome:
        raise TypeError("a Twilio call forwards with dial(), not ring() or bridge()")

    def bridge(self, leg: OutboundCall) -> None:
        raise TypeError("a Twilio call forwards with dial(), not ring() or bridge()")

    def dial(self, number: str, ring_s: float) -> Dialled:
        """<Dial> `number`: the caller hears ringing, then talks to whoever answers."""

        def build(action: str) -> VoiceResponse:
            response = self._response()
            response.dial(action=action, timeout=round(ring_s),
                          answer_on_bridge=True).number(number)
            return response

        answer = self._exchange(build, ring_s + BRIDGE_MAX_S, grace=ACTION_GRACE_S)
        status = answer.get("DialCallStatus", "failed")
        return Dialled(DIAL_OUTCOMES.get(status, Outcome.REFUSED), self._settings.trunk,
                       status, answer.get("DialCallSid"))

    def leave_message(self, samples: Samples, recognizer: Recognizer,
                      max_s: int) -> str | None:
        """<Record> the caller's message, then fetch it from Twilio and transcribe it
        with our own recognizer. The text names the recording, for staff to listen to."""
        self.play(samples, barge_in=False)

        def build(action: str) -> VoiceResponse:
            response = self._response()
            response.record(action=action, max_length=max_s, play_beep=True, timeout=5,
                            finish_on_key="#", trim="trim-silence")
            response.redirect(action)  # no audio: Twilio goes on without the action
            return response

        try:
            answer = self._exchange(build, max_s + 10, grace=ACTION_GRACE_S)
        except CallEnded as ended:  # before the tone: the ticket is still opened
            return f"[no message: {ended.args[0] if ended.args else 'the call ended'}]"
        url, sid = answer.get("RecordingUrl"), answer.get("RecordingSid", "")
        if not url:
            return ""
        where = f" [recording {sid}]" if _RECORDING_SID.match(sid) else ""
        try:
            return transcribe(recognizer, self._recordings.fetch(url)) + where
        except (RecordingError, RecognizerError) as exc:
            logger.error("Twilio call %s: message not transcribed: %s", self.call.sid, exc)
            return f"[not transcribed: {exc}]{where}"

    def hangup(self) -> None:
        response = self._response()
        response.hangup()
        self.call.finish(str(response))

    # -- helpers

    def _gather(self, kind: str, timeout: float) -> Params:
        """A <Gather> of one key (and speech, for `kind` "dtmf speech") that the queued
        plays which allow it interrupt."""
        seconds = sum(p[2] for p in self._pending)
        inside: list[str] = []
        while self._pending and self._pending[-1][1]:
            inside.insert(0, self._pending.pop()[0])

        def build(action: str) -> VoiceResponse:
            response = self._response()
            options: dict[str, Any] = {"input": kind, "num_digits": 1, "finish_on_key": "",
                                       "timeout": max(1, round(timeout)), "action": action,
                                       "action_on_empty_result": True}
            if "speech" in kind:
                options.update(speech_timeout="auto", language=self._settings.language)
            gather: Gather = response.gather(**options)
            for url in inside:
                gather.play(url)
            return response

        return self._exchange(build, seconds + timeout
                              + (SPEECH_MAX_S if "speech" in kind else 0.0))

    def _exchange(self, build: Callable[[str], VoiceResponse], timeout: float,
                  grace: float = 0.0) -> Params:
        seq = self.call.send(build)
        return self.call.receive(seq, timeout + INPUT_SLACK_S, grace)

    def _response(self) -> VoiceResponse:
        """A document that starts with the queued plays (which the caller hears whole)."""
        response = VoiceResponse()
        for url, _, _ in self._pending:
            response.play(url)
        self._pending.clear()
        return response


class Recordings:
    """Recordings of our account, fetched from Twilio's API."""

    def __init__(self, settings: TwilioVoiceSettings) -> None:
        self._prefix = (f"{settings.api_base}/2010-04-01/Accounts/{settings.account_sid}"
                        "/Recordings/")
        self._auth = (settings.account_sid, settings.auth_token.get_secret_value())

    def fetch(self, url: str) -> Samples:
        """The recording at `url` as 8 kHz samples; only our account's recordings are
        fetched, so a request cannot make the server fetch any other address."""
        if not url.startswith(self._prefix) or not _RECORDING_SID.match(url[len(self._prefix):]):
            raise RecordingError("the recording is not one of our account's at Twilio's API")
        deadline = time.monotonic() + RECORDING_WAIT_S
        while True:
            try:
                reply = requests.get(f"{url}.wav", auth=self._auth, timeout=10)
            except requests.RequestException as exc:
                raise RecordingError(f"fetching it failed: {type(exc).__name__}") from exc
            if reply.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.5)  # Twilio stores it a moment after the action
                continue
            if reply.status_code != 200:
                raise RecordingError(f"fetching it failed: HTTP {reply.status_code}")
            return read_recording(reply.content)


def transcribe(recognizer: Recognizer, samples: Samples) -> str:
    """Everything said in `samples` (8 kHz), turn after turn."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    texts: list[str] = []
    recognizer.reset()
    for start in range(0, len(pcm), FRAME_BYTES):
        for event in recognizer.accept(pcm[start:start + FRAME_BYTES]):
            if event.kind in ("final", "no-input"):
                texts.append(event.text)
                recognizer.reset()
    texts.append(recognizer.finish().text)
    return " ".join(t.strip() for t in texts if t.strip())


def read_recording(data: bytes) -> Samples:
    """A recording's WAV file (Twilio serves 16-bit PCM) as 8 kHz mono samples."""
    try:
        samples, rate = read_wav_bytes(data)
    except AudioFileError as exc:
        raise RecordingError(str(exc)) from exc
    return resample(samples, rate, TELEPHONE_RATE)


def hangup_twiml() -> str:
    """A TwiML document that ends the call."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


__all__ = ["Params", "RecordingError", "Recordings", "TwilioCall", "TwilioChannel",
           "hangup_twiml", "read_recording", "transcribe"]
