"""Twilio Voice: whole calls through the webhooks, played by `tests.twilio_caller` as
Twilio would (signed with the twilio package's validator, TwiML followed verb by verb),
against the real flow runner, real Redis, the real voice bot (Whisper, the example
FAQ), and recordings served by the local Twilio fake."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis
import requests
import yaml

import ivr.channels.twilio as twilio_channel
from failover.notify.alert import mask_number
from ivr.flow.voicebot import VoiceBot
from ivr.metrics import CALLS, CALLS_ACTIVE
from ivr.records import CallStore
from ivr.server import Server
from ivr.settings import load_settings
from ivr.tickets.store import TicketStore
from speech.prompts import PromptCache
from speech.synthesizer import wav_bytes
from tests.ivr.conftest import WriteConfig
from tests.ivr.flow.test_voicebot_calls import FLOW as BOT_FLOW
from tests.ivr.http.conftest import ALICE, API_TOKEN, BOB, CALLER, MakeVoice, record_of
from tests.peers import Carrier, RedisServer, free_udp_port
from tests.speech_audio import speak
from tests.twilio_caller import PUBLIC_URL, Document, VoiceCaller
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, WebhookReceiver

MENU_FLOW = {
    "start": "welcome",
    "voice": {"engine": "espeak"},
    "nodes": {
        "welcome": {"type": "say", "text": "Welcome to the hotline.", "next": "menu"},
        "menu": {"type": "menu", "text": "For support, press 1. For our hours, press 2.",
                 "options": {"1": "support", "2": "hours"}, "timeout_s": 4, "retries": 2,
                 "failure": "goodbye"},
        "hours": {"type": "say", "text": "We are open from nine to five.", "next": "menu"},
        "support": {"type": "forward", "text": "Connecting you to the engineer on call.",
                    "ring_s": 15, "next": "goodbye", "failure": "nobody"},
        "nobody": {"type": "hangup", "text": "Sorry, nobody can take your call."},
        "goodbye": {"type": "hangup", "text": "Goodbye."},
    },
}

def test_a_menu_and_a_forward_escalating_to_the_next_engineer(
        make_voice: MakeVoice, redis_client: redis.Redis,
        espeak_prompts: PromptCache) -> None:
    voice, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    forwarded_before = CALLS.labels("twilio", "forwarded")._value.get()
    active_before = CALLS_ACTIVE.labels("twilio")._value.get()

    first = caller.call()
    assert CALLS_ACTIVE.labels("twilio")._value.get() == active_before + 1
    assert first.verbs == ["Play", "Gather"]
    gather = first.verb("Gather")
    assert gather.get("input") == "dtmf" and gather.get("numDigits") == "1"
    assert gather.get("timeout") == "4" and gather.get("actionOnEmptyResult") == "true"
    assert gather.get("finishOnKey") == ""  # else "#" ends the gather and never reaches a menu
    welcome, menu = first.plays()
    assert [p.text for p in gather.iter("Play")] == [menu]  # the menu, not the welcome,
    # may be interrupted by a key
    assert (caller.audio(welcome) == espeak_prompts.text("Welcome to the hotline.")).all()
    assert (caller.audio(menu) == espeak_prompts.text(
        "For support, press 1. For our hours, press 2.")).all()

    dial = caller.answer(first, "Gather", Digits="1")
    assert dial.verbs == ["Play", "Dial"]
    assert dial.verb("Dial").get("timeout") == "15"
    assert dial.verb("Dial").get("answerOnBridge") == "true"
    assert dial.verb("Dial").findtext("Number") == ALICE
    assert (caller.audio(dial.plays()[0]) == espeak_prompts.text(
        "Connecting you to the engineer on call.")).all()

    escalated = caller.answer(dial, "Dial", DialCallStatus="no-answer")
    assert escalated.verbs == ["Dial"] and escalated.verb("Dial").findtext("Number") == BOB

    goodbye = caller.answer(escalated, "Dial", DialCallStatus="completed",
                            DialCallSid="CA" + "b" * 32, DialCallDuration="42")
    assert goodbye.verbs == ["Play", "Hangup"]
    assert (caller.audio(goodbye.plays()[0]) == espeak_prompts.text("Goodbye.")).all()

    record = record_of(redis_client, caller.sid)
    assert (record.trunk, record.caller, record.called) == ("twilio", CALLER, "+15557770000")
    assert record.path == ["welcome", "menu", "support", "goodbye"]
    assert record.digits == "1"
    assert record.outcome == "forwarded" and record.forwarded_to == "bob"
    assert [(a["person"], a["trunk"], a["outcome"], a["status"])
            for a in record.forward_attempts] == [
        ("alice", "twilio", "refused", "no-answer"), ("bob", "twilio", "answered", "completed")]

    assert caller.status("completed", 75).status_code == 204
    record = CallStore(redis_client).get(caller.sid)
    assert record is not None and record.end_reason == "twilio: completed"
    assert voice.active() == 0
    assert CALLS.labels("twilio", "forwarded")._value.get() == forwarded_before + 1
    assert CALLS_ACTIVE.labels("twilio")._value.get() == active_before


def test_menu_retries_then_failure(make_voice: MakeVoice, redis_client: redis.Redis,
                                   espeak_prompts: PromptCache) -> None:
    _, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    first = caller.call()
    again = caller.answer(first, "Gather")  # the gather timed out: no Digits
    assert again.verbs == ["Play", "Gather"]
    assert (caller.audio(again.plays()[0]) == espeak_prompts.text(
        "Sorry, I did not hear a choice.")).all()
    ended = caller.answer(again, "Gather", Digits="7")
    assert ended.verbs == ["Play", "Hangup"]
    record = record_of(redis_client, caller.sid)
    assert record.path == ["welcome", "menu", "goodbye"] and record.digits == "7"
    assert record.outcome == "completed"


def test_the_voice_bot_records_a_message_and_transcribes_it_into_the_ticket(
        make_voice: MakeVoice, voicebot: VoiceBot, redis_client: redis.Redis,
        espeak_prompts: PromptCache) -> None:
    with FakeTwilio() as fake:
        _, client = make_voice(BOT_FLOW, bot=voicebot, api_base_url=fake.url)
        caller = VoiceCaller(client, CALLER)
        greeting = caller.call()
        gather = greeting.verb("Gather")
        assert gather.get("input") == "dtmf speech" and gather.get("language") == "en-US"
        assert gather.get("speechTimeout") == "auto" and gather.get("timeout") == "3"

        answer = caller.answer(greeting, "Gather", SpeechResult="Where is my order?",
                               Confidence="0.92")
        spoken = caller.audio(answer.plays()[0])
        entry = voicebot.searcher.faq.entry("order-status")
        assert len(spoken) > len(espeak_prompts.text(entry.answer))  # answer + "did it help"

        message = caller.answer(answer, "Gather", SpeechResult="No, it did not.")
        assert message.verbs == ["Play", "Record", "Redirect"]
        record_verb = message.verb("Record")
        assert record_verb.get("maxLength") == "60" and record_verb.get("finishOnKey") == "#"
        assert (caller.audio(message.plays()[0]) == espeak_prompts.text(
            BOT_FLOW_MESSAGE)).all()

        sid, url = fake.add_recording(wav_bytes(speak(
            "My compressor stops every morning with fault seven."), 8000))
        after = caller.answer(message, "Record", RecordingUrl=url, RecordingSid=sid,
                              RecordingDuration="4")
        assert after.verbs == ["Play", "Play", "Hangup"]  # the ticket number, goodbye
        fetched = [r for r in fake.received if r.path.endswith(f"{sid}.wav")]
        assert [r.status for r in fetched] == [200]  # with the account's credentials

    record = record_of(redis_client, caller.sid)
    assert record.outcome == "bot: ticket" and record.ticket is not None
    ticket = TicketStore(redis_client).get(record.ticket)
    said = [(t.speaker, t.text) for t in ticket.transcript]
    assert said[0] == ("bot", "Hello. Please tell me your question.")
    assert ("caller", "Where is my order?") in said
    assert ("bot", BOT_FLOW_MESSAGE) in said
    words = next(text for who, text in said if text.startswith("[message]"))
    assert "compressor" in words.lower() and words.endswith(f"[recording {sid}]")
    assert ticket.caller == CALLER and ticket.trunk == "twilio"


BOT_FLOW_MESSAGE = ("Please tell us about your problem after the tone, and press the "
                    "pound key or hang up when you are done.")


def test_recordings_are_fetched_only_from_our_account_at_twilio(
        make_voice: MakeVoice, voicebot: VoiceBot, redis_client: redis.Redis) -> None:
    with FakeTwilio() as fake, WebhookReceiver() as elsewhere:
        _, client = make_voice(BOT_FLOW, bot=voicebot, api_base_url=fake.url)
        caller = VoiceCaller(client, CALLER)
        greeting = caller.call()
        unknown = caller.answer(greeting, "Gather",
                                SpeechResult="What is the football score tonight?")
        rephrase = caller.answer(unknown, "Gather", SpeechResult="The football score.")
        assert rephrase.verbs[-3:] == ["Play", "Record", "Redirect"]
        forged = f"{elsewhere.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{'a' * 32}"
        after = caller.answer(rephrase, "Record", RecordingUrl=forged,
                              RecordingSid="RE" + "a" * 32)
        assert after.verbs[-1] == "Hangup"
        assert elsewhere.received == [] and fake.received == []
    ticket = TicketStore(redis_client).get(record_of(redis_client, caller.sid).ticket or "")
    assert any(t.text.startswith("[message] [not transcribed: the recording is not one of "
                                 "our account's") for t in ticket.transcript)


def test_a_caller_who_hangs_up_while_recording_still_gets_a_ticket(
        make_voice: MakeVoice, voicebot: VoiceBot, redis_client: redis.Redis) -> None:
    with FakeTwilio() as fake:
        _, client = make_voice(BOT_FLOW, bot=voicebot, api_base_url=fake.url)
        caller = VoiceCaller(client, CALLER)
        greeting = caller.call()
        unknown = caller.answer(greeting, "Gather", SpeechResult="Tell me a joke please.")
        rephrase = caller.answer(unknown, "Gather", SpeechResult="A funny joke.")
        sid, url = fake.add_recording(
            wav_bytes(speak("Please call me back about the dryer."), 8000))
        # Twilio sends the status callback and the recording's action at about the same time
        assert caller.status("completed", 30).status_code == 204
        caller.post(rephrase.verb("Record").get("action") or "", CallStatus="completed",
                    RecordingUrl=url, RecordingSid=sid)
    record = record_of(redis_client, caller.sid)
    assert record.ticket is not None and record.end_reason == "twilio: completed"
    ticket = TicketStore(redis_client).get(record.ticket)
    assert any("dryer" in t.text.lower() for t in ticket.transcript if t.speaker == "caller")


@pytest.mark.parametrize("forge", ["missing", "other token", "other url", "tampered",
                                   "other account"])
def test_unsigned_and_forged_webhooks_are_refused(make_voice: MakeVoice, forge: str,
                                                  redis_client: redis.Redis) -> None:
    voice, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER,
                         auth_token="another-token" if forge == "other token" else AUTH_TOKEN,
                         account_sid="AC" + "f" * 32 if forge == "other account"
                         else ACCOUNT_SID)
    url = f"{PUBLIC_URL}/twilio/voice"
    form = {**caller.params, "CallStatus": "ringing"}
    signature = {"missing": "", "other url": caller.validator.compute_signature(
        "https://attacker.example.com/twilio/voice", form),
        "tampered": caller.validator.compute_signature(url, {**form, "From": "+15551112222"}),
    }.get(forge)
    reply = caller.post(url, signature=signature, CallStatus="ringing")
    assert reply.status_code == 403
    assert AUTH_TOKEN not in reply.get_data(as_text=True)
    if forge in ("other token", "other account"):  # a caller who signs every request so
        assert caller.status("busy").status_code == 403
    assert voice.active() == 0 and CallStore(redis_client).get(caller.sid) is None


def test_every_webhook_is_signature_checked(make_voice: MakeVoice) -> None:
    _, client = make_voice(MENU_FLOW)
    for path in ("/twilio/voice", "/twilio/voice/next?seq=1", "/twilio/voice/status"):
        assert client.post(path, data={"CallSid": "CA" + "0" * 32}).status_code == 403
    assert client.get("/twilio/voice").status_code == 405


def test_status_callbacks_become_call_records(make_voice: MakeVoice,
                                              redis_client: redis.Redis) -> None:
    _, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    assert caller.status("ringing").status_code == 204
    assert CallStore(redis_client).get(caller.sid) is None  # only final statuses count
    before = time.time()
    assert caller.status("no-answer", 0).status_code == 204
    record = CallStore(redis_client).get(caller.sid)
    assert record is not None
    assert (record.caller, record.trunk, record.outcome) == (CALLER, "twilio", "no-answer")
    assert record.end_reason == "twilio: no-answer" and record.ended_at is not None
    assert record.ended_at >= before


def test_a_caller_hanging_up_mid_menu_ends_the_flow(make_voice: MakeVoice,
                                                    redis_client: redis.Redis) -> None:
    voice, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    first = caller.call()
    assert voice.active() == 1
    assert caller.status("completed", 3).status_code == 204
    record = record_of(redis_client, caller.sid)
    assert record.outcome == "caller hung up" and record.end_reason == "twilio: completed"
    assert record.path == ["welcome", "menu"]
    late = caller.post(first.verb("Gather").get("action") or "", Digits="1")
    assert Document(late.get_data(as_text=True)).verbs == ["Hangup"]
    assert voice.active() == 0


def test_calls_beyond_max_calls_are_rejected_busy(make_voice: MakeVoice,
                                                  redis_client: redis.Redis) -> None:
    voice, client = make_voice(MENU_FLOW, max_calls=1)
    first = VoiceCaller(client, CALLER)
    first.call()
    second = VoiceCaller(client, "+8613900000000")
    rejected = second.call()
    assert rejected.verbs == ["Reject"] and rejected.verb("Reject").get("reason") == "busy"
    assert second.status("busy").status_code == 204
    stored = CallStore(redis_client).get(second.sid)
    assert stored is not None and stored.outcome == "busy"
    assert voice.active() == 1


def test_audio_is_served_only_by_its_key(make_voice: MakeVoice) -> None:
    _, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    url = caller.call().plays()[0]
    assert client.get(url.removeprefix(PUBLIC_URL)).headers["Cache-Control"].startswith(
        "public")
    assert client.get("/twilio/audio/" + "0" * 32 + ".wav").status_code == 404
    assert client.get("/twilio/audio/../../etc/passwd.wav").status_code == 404


def test_no_secrets_in_pages_or_logs(make_voice: MakeVoice, redis_client: redis.Redis,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    first = caller.call()
    again = caller.answer(caller.answer(first, "Gather", Digits="2"), "Gather", Digits="9")
    assert caller.answer(again, "Gather", Digits="9").verbs == ["Play", "Hangup"]
    caller.post(f"{PUBLIC_URL}/twilio/voice", signature="forged", CallStatus="ringing")
    record_of(redis_client, caller.sid)
    pages = "".join(d.text for d in caller.documents)
    for secret in (AUTH_TOKEN, API_TOKEN):
        assert secret not in caplog.text and secret not in pages
    assert CALLER not in caplog.text and mask_number(CALLER) in caplog.text


def test_serve_runs_the_twilio_webhooks(write_config: WriteConfig, redis_server: RedisServer,
                                        carrier: Carrier, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump(MENU_FLOW))
    port = free_udp_port()  # the same number is very likely free on TCP too
    config = write_config({"carrier-a": carrier.address}, redis_url=redis_server.url,
                          flow=str(flow), http={
                              "listen": f"127.0.0.1:{port}", "token": API_TOKEN,
                              "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                                         "public_url": f"http://127.0.0.1:{port}"}})
    server = Server(load_settings(config))
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        caller = VoiceCaller(None, CALLER, public_url=base)  # type: ignore[arg-type]
        form = {**caller.params, "CallStatus": "ringing"}
        reply = requests.post(f"{base}/twilio/voice", data=form, timeout=10, headers={
            "X-Twilio-Signature": caller.validator.compute_signature(
                f"{base}/twilio/voice", form)})
        assert reply.status_code == 200, reply.text
        document = Document(reply.text)
        assert document.verbs == ["Play", "Gather"]
        wav = requests.get(document.plays()[0], timeout=10)
        assert wav.status_code == 200 and wav.content.startswith(b"RIFF")
        assert requests.post(f"{base}/twilio/voice", data=form, timeout=10).status_code == 403
    finally:
        server.stop()


def test_a_forward_ended_by_the_caller_is_still_recorded_as_forwarded(
        make_voice: MakeVoice, redis_client: redis.Redis) -> None:
    _, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    dial = caller.answer(caller.call(), "Gather", Digits="1")
    assert caller.status("completed", 90).status_code == 204  # before the Dial's action
    caller.post(dial.verb("Dial").get("action") or "", CallStatus="completed",
                DialCallStatus="completed", DialCallDuration="80")
    record = record_of(redis_client, caller.sid)
    assert record.outcome == "forwarded" and record.forwarded_to == "alice"
    assert record.end_reason == "twilio: completed"


def test_a_flow_without_a_hangup_node_still_plays_its_last_words(
        make_voice: MakeVoice, voicebot: VoiceBot, redis_client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_channel, "ACTION_GRACE_S", 0.5)
    alone = {**BOT_FLOW, "nodes": {"assistant": {
        k: v for k, v in BOT_FLOW["nodes"]["assistant"].items() if k != "next"}}}
    _, client = make_voice(alone, bot=voicebot)
    caller = VoiceCaller(client, CALLER)
    answer = caller.answer(caller.call(), "Gather", SpeechResult="Where is my order?")
    message = caller.answer(answer, "Gather", SpeechResult="No.")
    ended = caller.redirect(message)  # silence: no recording, Twilio goes on
    assert ended.verbs == ["Play", "Hangup"]  # the ticket number, then the end
    record = record_of(redis_client, caller.sid)
    assert record.outcome == "bot: ticket" and record.ticket is not None


def test_a_caller_gone_before_the_tone_still_gets_a_ticket(
        make_voice: MakeVoice, voicebot: VoiceBot, redis_client: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_channel, "ACTION_GRACE_S", 0.5)
    _, client = make_voice(BOT_FLOW, bot=voicebot)
    caller = VoiceCaller(client, CALLER)
    answer = caller.answer(caller.call(), "Gather", SpeechResult="Where is my order?")
    assert caller.answer(answer, "Gather", SpeechResult="No.").verbs[-2] == "Record"
    assert caller.status("completed", 20).status_code == 204
    record = record_of(redis_client, caller.sid)
    assert record.ticket is not None and record.end_reason == "twilio: completed"
    ticket = TicketStore(redis_client).get(record.ticket)
    assert ("caller", "[message] [no message: caller hung up]") in [
        (t.speaker, t.text) for t in ticket.transcript]


def test_a_replayed_first_request_of_a_finished_call_starts_nothing(
        make_voice: MakeVoice, redis_client: redis.Redis) -> None:
    voice, client = make_voice(MENU_FLOW)
    caller = VoiceCaller(client, CALLER)
    assert caller.status("no-answer").status_code == 204  # its record exists
    assert caller.call().verbs == ["Hangup"]
    assert voice.active() == 0
    stored = CallStore(redis_client).get(caller.sid)
    assert stored is not None and stored.outcome == "no-answer"


def test_a_hung_redis_neither_holds_up_a_call_nor_loses_its_record(
        make_voice: MakeVoice, own_redis: RedisServer) -> None:
    client = redis.Redis(unix_socket_path=str(own_redis.socket), decode_responses=True,
                         socket_timeout=2.0)  # a read waits 2 s before it times out
    _, http = make_voice({"start": "goodbye", "voice": {"engine": "espeak"},
                          "nodes": {"goodbye": {"type": "hangup", "text": "Goodbye."}}},
                         client=client)
    caller = VoiceCaller(http, CALLER)
    own_redis.pause()
    try:
        started = time.monotonic()
        first = caller.call()
        assert time.monotonic() - started < 1.0, "not a Redis timeout"
        assert first.verbs == ["Play", "Hangup"]
    finally:
        own_redis.resume()
    record = record_of(client, caller.sid)
    assert (record.path, record.outcome) == (["goodbye"], "completed")
    client.close()

