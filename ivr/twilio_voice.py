"""Twilio Voice: a hotline number hosted at Twilio runs the flow of ``ivr.yaml`` as TwiML.

Twilio asks the server what to do with a call by webhook, then does it: play audio,
gather keys or speech, dial, record. The flow, though, is straight-line code that
plays, waits and listens (`ivr.session.FlowRunner`). `TwilioChannel` joins the two:
each call runs the flow in a thread of its own, and every step that needs the caller
(`wait_digit`, `ask`, `dial`, `leave_message`, `hangup`) becomes one TwiML document,
whose action URL brings Twilio's next request -- the key, the words, the dial's result
or the recording -- back to the waiting flow::

    Twilio --POST /twilio/voice-----------------> a thread runs the flow for CallSid
           <--TwiML 1: Play, Gather action=/twilio/voice/next?seq=1
    Twilio --POST /twilio/voice/next?seq=1 Digits=2--> the flow's wait_digit returns "2"
           <--TwiML 2: ...

Plays that need no input are held back and sent with the next document. A request
waits up to `RESPONSE_WAIT_S` for the flow's next document; a flow busy for longer
(transcribing a long message) gets Twilio to pause and ask again, and a repeated
request gets the same document again.

The audio is the flow's own: every prompt the flow plays (Piper, cached) is served as
WAV from ``/twilio/audio/<key>.wav``, the key a keyed hash of the audio, so Twilio
caches it and nobody can guess the address of audio they were not sent.

Every webhook must carry a valid ``X-Twilio-Signature`` over `public_url` plus the path
and the form, and name our account (403 otherwise). Calls are only forwarded to the
on-call roster, never to a number a request names. Recordings are fetched only from
Twilio's API, for our account. Status callbacks (the number's "call status changes"
URL, ``/twilio/voice/status``) end a call's flow and complete its record, or make a
record of a call that never reached the flow (rejected while at `max_calls`, say).

A call's state lives in the process that answered it: every request of a call must
reach the same node (one node per Twilio number, or routing by CallSid).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
import requests
from flask import Blueprint, Response, abort, request
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import Gather, VoiceResponse  # type: ignore[import-untyped]

from failover.notify import mask_number
from ivr import metrics
from ivr.records import CallRecord, CallStore
from ivr.session import CallEnded, Channel, Dialled, FlowRunner
from ivr.settings import TwilioVoiceSettings
from ivr.voicebot import Heard
from speech.errors import AudioFileError, RecognizerError
from speech.prompts import TELEPHONE_RATE
from speech.recognizer import FRAME_BYTES, Recognizer
from speech.synthesizer import Samples, read_wav_bytes, resample, wav_bytes
from trunks.voip.outbound import OutboundCall, Outcome

logger = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
"""The number's "a call comes in" webhook."""
NEXT_PATH = "/twilio/voice/next"
"""Where every document's action and redirect lead."""
STATUS_PATH = "/twilio/voice/status"
"""The number's "call status changes" webhook."""
AUDIO_PATH = "/twilio/audio"
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
FINISHED_KEEP_S = 120.0
"""How long a finished call is remembered, for late and repeated requests."""
AUDIO_CACHE_BYTES = 64 << 20
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
DIAL_OUTCOMES = {"completed": Outcome.ANSWERED, "answered": Outcome.ANSWERED,
                 "busy": Outcome.REFUSED, "no-answer": Outcome.REFUSED,
                 "canceled": Outcome.CANCELLED, "failed": Outcome.TRUNK_FAILED}
"""<Dial>'s DialCallStatus as the outcome a SIP forward would have had."""
DTMF = frozenset("0123456789*#")
_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_RECORDING_SID = re.compile(r"^RE[0-9a-fA-F]{32}$")
_AUDIO_KEY = re.compile(r"^[0-9a-f]{32}$")

Params = dict[str, str]


class RecordingError(Exception):
    """A recording could not be fetched or read."""


class AudioStore:
    """The WAV files Twilio plays, by a keyed hash of their samples; the least recently
    added go first once `max_bytes` is reached."""

    def __init__(self, max_bytes: int = AUDIO_CACHE_BYTES) -> None:
        self._secret = secrets.token_bytes(32)
        self._max_bytes = max_bytes
        self._wavs: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, samples: Samples) -> str:
        pcm = np.asarray(samples, dtype="<i2").tobytes()
        key = hmac.new(self._secret, pcm, hashlib.sha256).hexdigest()[:32]
        with self._lock:
            if key in self._wavs:
                self._wavs.move_to_end(key)
                return key
            wav = wav_bytes(samples, TELEPHONE_RATE)
            self._wavs[key] = wav
            self._bytes += len(wav)
            while self._bytes > self._max_bytes and len(self._wavs) > 1:
                self._bytes -= len(self._wavs.popitem(last=False)[1])
        return key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._wavs.get(key)


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
                return _hangup()
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


class TwilioVoice:
    """The webhooks of a Twilio number, and the calls running on them."""

    def __init__(self, settings: TwilioVoiceSettings, runner: FlowRunner, store: CallStore,
                 no_input_s: float = 5.0, wallclock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.runner, self.store = runner, store
        self._no_input_s = no_input_s
        self._wallclock = wallclock
        self._validator = RequestValidator(settings.auth_token.get_secret_value())
        self._recordings = Recordings(settings)
        self.audio = AudioStore()
        self._calls: dict[str, TwilioCall] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("twilio", __name__)
        blueprint.before_request(self._authenticate)
        blueprint.add_url_rule(VOICE_PATH, "voice", self._voice, methods=["POST"])
        blueprint.add_url_rule(NEXT_PATH, "next", self._next, methods=["POST"])
        blueprint.add_url_rule(STATUS_PATH, "status", self._status, methods=["POST"])
        blueprint.add_url_rule(f"{AUDIO_PATH}/<key>.wav", "audio", self._audio, methods=["GET"])
        return blueprint

    def active(self) -> int:
        with self._lock:
            return self._running()

    def stop(self) -> None:
        """End every call's flow and wait for it."""
        with self._lock:
            self._stopping = True
            calls, threads = list(self._calls.values()), list(self._threads.values())
        for call in calls:
            call.end("server stopping")
        for thread in threads:
            thread.join(5)

    # -- webhooks

    def _authenticate(self) -> None:
        if request.path.startswith(f"{AUDIO_PATH}/"):
            return None  # addressed by keyed hash; Twilio fetches it without a signature
        query = request.query_string.decode()
        url = self.settings.public_url + request.path + (f"?{query}" if query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        params = request.form.to_dict()
        if not signature or not self._validator.validate(url, params, signature):
            logger.warning("Twilio webhook %s refused: bad or missing signature (from %s)",
                           request.path, request.remote_addr)
            abort(403)
        if params.get("AccountSid") != self.settings.account_sid:
            logger.warning("Twilio webhook %s refused: for another account", request.path)
            abort(403)
        return None

    def _voice(self) -> Response:
        params = request.form.to_dict()
        sid = params.get("CallSid", "")
        if not _SID.match(sid):
            abort(400)
        with self._lock:
            known = sid in self._calls
        if not known and self._seen(sid):
            logger.warning("Twilio call %s is over already; a replayed request?", sid)
            return _twiml(_hangup())
        with self._lock:
            self._forget_finished()
            call = self._calls.get(sid)
            busy = self._stopping or self._running() >= self.settings.max_calls
            if call is None and not busy:
                call = self._calls[sid] = TwilioCall(sid, self._next_url)
                record = CallRecord(sid, self.settings.trunk, params.get("From", ""),
                                    params.get("To", ""), self._wallclock(),
                                    answered_at=self._wallclock())
                thread = threading.Thread(target=self._run, args=(call, record),
                                          name=f"twilio-{sid[-8:]}", daemon=True)
                self._threads[sid] = thread
                thread.start()
        if call is None:
            logger.warning("Twilio call %s from %s refused: %s", sid,
                           mask_number(params.get("From", "")),
                           "stopping" if self._stopping else
                           f"{self.settings.max_calls} calls already")
            response = VoiceResponse()
            response.reject(reason="busy")
            return _twiml(str(response))
        return _twiml(call.respond(0, params))

    def _next(self) -> Response:
        params = request.form.to_dict()
        seq = request.args.get("seq", "")
        if not seq.isdigit():
            abort(400)
        with self._lock:
            call = self._calls.get(params.get("CallSid", ""))
        if call is None:
            logger.warning("Twilio request for call %s, which is not running here",
                           params.get("CallSid"))
            return _twiml(_hangup())
        return _twiml(call.respond(int(seq), params))

    def _status(self) -> Response:
        params = request.form.to_dict()
        sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
        if not _SID.match(sid):
            abort(400)
        if status not in FINAL_STATUSES:
            return Response(status=204)
        with self._lock:
            call = self._calls.get(sid)
        if call is not None and call.end(status):
            return Response(status=204)  # the flow's thread completes the record
        if call is not None:
            call.saved.wait(RESPONSE_WAIT_S)  # its last save first, then the status
        try:
            self._complete(sid, status, params)
        except Exception:  # Twilio retries nothing; the log must say
            logger.exception("Twilio call %s: record not completed", sid)
        return Response(status=204)

    def _audio(self, key: str) -> Response:
        wav = self.audio.get(key) if _AUDIO_KEY.match(key) else None
        if wav is None:
            abort(404)
        response = Response(wav, mimetype="audio/wav")
        response.headers["Cache-Control"] = "public, max-age=86400, immutable"
        return response

    # -- calls

    def _run(self, call: TwilioCall, record: CallRecord) -> None:
        channel = TwilioChannel(call, self.audio, self._audio_url, self.settings,
                                self._recordings, self._no_input_s)
        logger.info("Twilio call %s from %s", call.sid, mask_number(record.caller))
        self.store.save_quietly(record)
        metrics.call_started("twilio")
        try:
            self.runner.run(channel, record)
            if call.ended is None and call.finished_at is None:
                channel.hangup()  # the flow ended without a hangup node: its last plays
        except Exception:  # the record is kept whatever went wrong
            logger.exception("Twilio call %s: the flow failed", call.sid)
            record.outcome = record.outcome or "error"
        finally:
            call.finish()
            record.ended_at = self._wallclock()
            record.end_reason = f"twilio: {call.ended}" if call.ended else "flow ended"
            self.store.save_quietly(record)
            call.saved.set()
            metrics.call_ended("twilio", record.outcome)
            logger.info("Twilio call %s: %s via %s", call.sid, record.outcome,
                        " > ".join(record.path))

    def _complete(self, sid: str, status: str, params: Params) -> None:
        """Complete the record of a call whose flow is over, or make one."""
        now = self._wallclock()
        record = self.store.get(sid)
        if record is None:
            duration = float(params["CallDuration"]) if params.get(
                "CallDuration", "").isdigit() else 0.0
            record = CallRecord(sid, self.settings.trunk, params.get("From", ""),
                                params.get("To", ""), now - duration)
            record.outcome = status
        record.ended_at = now
        record.end_reason = f"twilio: {status}"
        self.store.save(record)
        logger.info("Twilio call %s: %s", sid, status)

    def _running(self) -> int:
        """Calls whose flow has not finished (with the lock held)."""
        return sum(1 for c in self._calls.values() if c.finished_at is None)

    def _seen(self, sid: str) -> bool:
        """Whether a call record exists already for `sid` (one forgotten here)."""
        try:
            return self.store.get(sid) is not None
        except redis.RedisError:
            return False  # a new call is far likelier than a replay

    def _forget_finished(self) -> None:
        cutoff = time.monotonic() - FINISHED_KEEP_S
        for sid in [s for s, c in self._calls.items()
                    if c.finished_at is not None and c.finished_at < cutoff]:
            del self._calls[sid]
            self._threads.pop(sid, None)

    def _next_url(self, seq: int) -> str:
        return f"{self.settings.public_url}{NEXT_PATH}?seq={seq}"

    def _audio_url(self, key: str) -> str:
        return f"{self.settings.public_url}{AUDIO_PATH}/{key}.wav"


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


def _hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def _twiml(document: str) -> Response:
    return Response(document, mimetype="text/xml")


__all__ = ["AudioStore", "Recordings", "TwilioCall", "TwilioChannel", "TwilioVoice",
           "read_recording", "transcribe"]
