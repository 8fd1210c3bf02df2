"""Twilio Voice: a hotline number hosted at Twilio runs the flow of ``ivr.yaml`` as TwiML.

Twilio asks the server what to do with a call by webhook, then does it: play audio,
gather keys or speech, dial, record. The flow, though, is straight-line code that
plays, waits and listens (`ivr.flow.runner.FlowRunner`). `TwilioChannel` joins the two:
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
caches it and nobody can guess the address of audio they were not sent. The key is the
same on every node, and the audio is shared through Redis, so any node serves it
(`ivr.channels.twilio_audio`).

Every webhook must carry a valid ``X-Twilio-Signature`` over `public_url` (or this
node's `node_url`) plus the path and the form, and name our account (403 otherwise).
Calls are only forwarded to the on-call roster, never to a number a request names.
Recordings are fetched only from Twilio's API, for our account. Status callbacks (the
number's "call status changes" URL, ``/twilio/voice/status``) end a call's flow and
complete its record, or make a record of a call that never reached the flow (rejected
while at `max_calls`, say).

A call's flow lives in the node that took its first request, so every later request
must reach that node. Its documents send them there (their URLs start with the node's
own `node_url`), and a request that reaches another node anyway is relayed to it
(`ivr.http.twilio_owners`). When that node is gone, the caller hears `cut_off_text`,
and the call is taken over as the SIP calls of a dead node are (`cut_off`: its record
closed, the caller called back or a ticket opened). The number's fallback URL
(``/twilio/voice/fallback``, asked when Twilio could not get a document) does the same
for a call whose node is gone, and starts a call whose first request failed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

import redis
from flask import Blueprint, Response, abort, request
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from failover.notify.alert import mask_number
from ivr import metrics
from ivr.channels.twilio import (
    BRIDGE_MAX_S,
    FINAL_STATUSES,
    RESPONSE_WAIT_S,
    Params,
    Recordings,
    TwilioCall,
    TwilioChannel,
    hangup_twiml,
)
from ivr.channels.twilio_audio import AudioStore, audio_secret
from ivr.flow.runner import FlowRunner
from ivr.http.twilio_owners import RELAYED_HEADER, CallOwners, Owner
from ivr.records import CallRecord, CallStore, RecordWriter
from ivr.settings import TwilioVoiceSettings
from trunks.bounded import within

logger = logging.getLogger(__name__)

VOICE_PATH = "/twilio/voice"
"""The number's "a call comes in" webhook."""
NEXT_PATH = "/twilio/voice/next"
"""Where every document's action and redirect lead."""
STATUS_PATH = "/twilio/voice/status"
"""The number's "call status changes" webhook."""
FALLBACK_PATH = "/twilio/voice/fallback"
"""The number's "primary handler fails" webhook."""
AUDIO_PATH = "/twilio/audio"
FINISHED_KEEP_S = 120.0
"""How long a finished call is remembered, for late and repeated requests."""
REPORT_WAIT_S = BRIDGE_MAX_S + 3600
"""How long after it started a call whose node died may still be reported on by Twilio
(a forward is waited for at most `BRIDGE_MAX_S`)."""
_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_AUDIO_KEY = re.compile(r"^[0-9a-f]{32}$")

CutOff = Callable[[str, str, str], bool]
"""Takes over call (id) of a gone node (name) and run: its record closed as cut off, the
caller called back or a ticket opened. Whether the call is closed so."""


class TwilioVoice:
    """The webhooks of a Twilio number, and the calls running on them."""

    def __init__(self, settings: TwilioVoiceSettings, runner: FlowRunner, store: CallStore,
                 records: RecordWriter, no_input_s: float = 5.0,
                 wallclock: Callable[[], float] = time.time,
                 owners: CallOwners | None = None, cut_off: CutOff | None = None) -> None:
        """`records` saves each call's record as its flow moves; `store` reads records,
        and completes them from status callbacks; its Redis shares the calls' audio.
        `owners`: where the other nodes' calls run (None: this node is alone); `cut_off`
        takes over the calls of nodes that are gone."""
        self.settings = settings
        self.runner, self.store, self.records = runner, store, records
        self.owners, self._cut_off = owners, cut_off
        self._no_input_s = no_input_s
        self._wallclock = wallclock
        self._bases = list(dict.fromkeys([settings.public_url, settings.own_url]))
        self._validator = RequestValidator(settings.auth_token.get_secret_value())
        self._recordings = Recordings(settings)
        self.audio = AudioStore(audio_secret(settings.auth_token.get_secret_value()),
                                store.redis, store.prefix)
        self._calls: dict[str, TwilioCall] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = False
        runner.prompts.text(settings.cut_off_text)  # synthesized now, not for a caller

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("twilio", __name__)
        blueprint.before_request(self._authenticate)
        blueprint.add_url_rule(VOICE_PATH, "voice", self._voice, methods=["POST"])
        blueprint.add_url_rule(NEXT_PATH, "next", self._next, methods=["POST"])
        blueprint.add_url_rule(STATUS_PATH, "status", self._status, methods=["POST"])
        blueprint.add_url_rule(FALLBACK_PATH, "fallback", self._fallback, methods=["POST"])
        blueprint.add_url_rule(f"{AUDIO_PATH}/<key>.wav", "audio", self._audio, methods=["GET"])
        return blueprint

    def active(self) -> int:
        with self._lock:
            return self._running()

    def awaits_report(self, record: CallRecord) -> bool:
        """Whether Twilio may still send a request or a status callback for `record`'s
        call (one of this number, whose node died): its webhooks then take it over, when
        the caller is done with what Twilio was doing for it (talking to staff, say)."""
        return (record.trunk == self.settings.trunk
                and self._wallclock() - record.started_at < REPORT_WAIT_S)

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
        path, params = _path(), request.form.to_dict()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not any(self._validator.validate(base + path, params, signature)
                                    for base in self._bases):
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
            return _twiml(hangup_twiml())
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
        sid = params.get("CallSid", "")
        with self._lock:
            call = self._calls.get(sid)
        if call is not None:
            return _twiml(call.respond(int(seq), params))
        owner = self._elsewhere(sid)
        if owner is not None:
            return self._relay(owner) or self._lost(sid, owner)
        logger.warning("Twilio request for call %s, which is not running here", sid)
        return _twiml(hangup_twiml())

    def _status(self) -> Response:
        params = request.form.to_dict()
        sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
        if not _SID.match(sid):
            abort(400)
        if status not in FINAL_STATUSES:
            return Response(status=204)
        with self._lock:
            call = self._calls.get(sid)
        if call is None and (owner := self._elsewhere(sid)) is not None:
            relayed = self._relay(owner)
            if relayed is not None:
                return relayed
            if self._take_over(sid, owner):
                return Response(status=204)  # cut off, not a call that ended: kept so
        if call is not None and call.end(status):
            return Response(status=204)  # the flow's thread completes the record
        if call is not None:
            call.saved.wait(RESPONSE_WAIT_S)  # its last save first, then the status
        try:
            self._complete(sid, status, params)
        except Exception:  # Twilio retries nothing; the log must say
            logger.exception("Twilio call %s: record not completed", sid)
        return Response(status=204)

    def _fallback(self) -> Response:
        """Twilio could not get (or read) a document at `ErrorUrl`: answer in its stead."""
        params = request.form.to_dict()
        sid, failed = params.get("CallSid", ""), params.get("ErrorUrl", "")
        if not _SID.match(sid):
            abort(400)
        logger.warning("Twilio call %s: error %s at %s; asking the fallback URL", sid,
                       params.get("ErrorCode", "?"), failed)
        with self._lock:
            call = self._calls.get(sid)
        seq = _step(failed)
        if call is not None:  # running here: Twilio asks again for what it could not get
            return _twiml(call.respond(seq, params) if seq is not None else hangup_twiml())
        owner = self._elsewhere(sid)
        if owner is not None:
            return self._relay(owner) or self._lost(sid, owner)
        if seq == 0:  # the call's first request failed: its node died as it came
            return self._voice()
        return _twiml(hangup_twiml())

    def _audio(self, key: str) -> Response:
        wav = self.audio.get(key) if _AUDIO_KEY.match(key) else None
        if wav is None:
            abort(404)
        response = Response(wav, mimetype="audio/wav")
        response.headers["Cache-Control"] = "public, max-age=86400, immutable"
        return response

    # -- calls of other nodes

    def _elsewhere(self, sid: str) -> Owner | None:
        """The node that runs call `sid` if that is another node (or an earlier run of
        this one). None for a request another node relayed here: it goes no further."""
        if self.owners is None or request.headers.get(RELAYED_HEADER):
            return None
        owner = self.owners.find(sid)
        return None if owner is None or owner == self.owners.me else owner

    def _relay(self, owner: Owner) -> Response | None:
        """`owner`'s answer to this request, if it is not gone and gives one."""
        assert self.owners is not None
        if owner.node == self.owners.me.node or self.owners.gone(owner):
            return None
        return self.owners.relay(owner, _path(), request.form.to_dict())

    def _lost(self, sid: str, owner: Owner) -> Response:
        """The answer for a call whose node is gone: sorry, then the end, once the call
        is taken over (the record closed, a call-back or a ticket)."""
        if not self._take_over(sid, owner):
            return _twiml(hangup_twiml())
        response = VoiceResponse()
        response.play(self._audio_url(self.audio.add(
            self.runner.prompts.text(self.settings.cut_off_text))))
        response.hangup()
        return _twiml(str(response))

    def _take_over(self, sid: str, owner: Owner) -> bool:
        if self._cut_off is None:
            logger.error("Twilio call %s: its node %s is gone, and this node takes no calls "
                         "over", sid, owner.node)
            return False
        try:
            taken = self._cut_off(sid, owner.node, owner.run)
        except Exception:  # Redis away, or a bug: Twilio still gets an answer
            logger.exception("Twilio call %s: not taken over from node %s", sid, owner.node)
            return False
        if taken:
            logger.warning("Twilio call %s: its node %s is gone; the call is closed as cut off",
                           sid, owner.node)
        return taken

    # -- calls

    def _run(self, call: TwilioCall, record: CallRecord) -> None:
        channel = TwilioChannel(call, self.audio, self._audio_url, self.settings,
                                self._recordings, self._no_input_s)
        if self.owners is not None:
            self.owners.claim(call.sid)
        logger.info("Twilio call %s from %s", call.sid, mask_number(record.caller))
        self.records.update(record)
        metrics.call_started("twilio")
        try:
            self.runner.run(channel, record, on_step=self.records.update)
            if call.ended is None and call.finished_at is None:
                channel.hangup()  # the flow ended without a hangup node: its last plays
        except Exception:  # the record is kept whatever went wrong
            logger.exception("Twilio call %s: the flow failed", call.sid)
            record.outcome = record.outcome or "error"
        finally:
            call.finish()
            record.ended_at = self._wallclock()
            record.end_reason = f"twilio: {call.ended}" if call.ended else "flow ended"
            if not self.records.save(record):
                logger.error("Twilio call %s: record not stored or spooled yet", call.sid)
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
        """Whether a call record exists already for `sid` (one forgotten here). Twilio
        waits for this answer with the caller, so Redis gets `trunks.bounded.WAIT_S`."""
        try:
            return within(lambda: self.store.get(sid), name="twilio-seen") is not None
        except redis.RedisError:  # TooSlow included
            return False  # a new call is far likelier than a replay

    def _forget_finished(self) -> None:
        cutoff = time.monotonic() - FINISHED_KEEP_S
        for sid in [s for s, c in self._calls.items()
                    if c.finished_at is not None and c.finished_at < cutoff]:
            del self._calls[sid]
            self._threads.pop(sid, None)

    def _next_url(self, seq: int) -> str:
        return f"{self.settings.own_url}{NEXT_PATH}?seq={seq}"

    def _audio_url(self, key: str) -> str:
        """Audio every node serves goes through the shared address, the rest to this node."""
        base = self.settings.public_url if self.audio.shared(key) else self.settings.own_url
        return f"{base}{AUDIO_PATH}/{key}.wav"


def _step(failed: str) -> int | None:
    """The step that a request for one of our URLs answers (0: the call's first), or None."""
    parts = urllib.parse.urlsplit(failed)
    seq = urllib.parse.parse_qs(parts.query).get("seq", [""])[0]
    if parts.path.endswith(VOICE_PATH):
        return 0
    return int(seq) if parts.path.endswith(NEXT_PATH) and seq.isdigit() else None


def _path() -> str:
    """The request's path and query, as Twilio asked for them."""
    query = request.query_string.decode()
    return request.path + (f"?{query}" if query else "")


def _twiml(document: str) -> Response:
    return Response(document, mimetype="text/xml")


__all__ = ["TwilioVoice"]
