"""The Twilio channel's side of a call, without the webhooks: the exchange of TwiML
documents and requests, and recordings read back at the telephone rate."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import ivr.channels.twilio as twilio_channel
from ivr.channels.twilio import TwilioCall, read_recording
from speech.synthesizer import resample, wav_bytes
from tests.speech_audio import speak
from tests.twilio_caller import PUBLIC_URL, Document


def test_a_busy_flow_makes_twilio_pause_and_ask_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_channel, "RESPONSE_WAIT_S", 0.2)
    call = TwilioCall("CA" + "1" * 32, lambda seq: f"{PUBLIC_URL}/twilio/voice/next?seq={seq}")
    answers: list[dict[str, str]] = []

    def flow() -> None:
        from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

        def gather(action: str) -> Any:
            response = VoiceResponse()
            response.gather(action=action)
            return response

        seq = call.send(gather)
        answers.append(call.receive(seq, 5))
        time.sleep(0.5)  # longer than a request waits
        call.finish("<Response><Hangup/></Response>")

    thread = threading.Thread(target=flow)
    thread.start()
    first = Document(call.respond(0, {}))
    assert first.verbs == ["Gather"]
    hold = Document(call.respond(1, {"Digits": "5"}))
    assert hold.verbs == ["Pause", "Redirect"]
    assert hold.verb("Redirect").text == f"{PUBLIC_URL}/twilio/voice/next?seq=1"
    again = Document(call.respond(1, {"Digits": "6"}))  # the redirect: same step
    while again.hold:
        again = Document(call.respond(1, {}))
    assert again.verbs == ["Hangup"]
    thread.join()
    assert answers == [{"Digits": "5"}]  # delivered once


def test_recordings_at_other_rates_are_resampled() -> None:
    samples = speak("one two three")
    wide = resample(samples, 8000, 16000)
    assert abs(len(read_recording(wav_bytes(wide, 16000))) - len(samples)) <= 2
    with pytest.raises(twilio_channel.RecordingError, match="not a readable WAV file"):
        read_recording(b"RIFF....nonsense")
