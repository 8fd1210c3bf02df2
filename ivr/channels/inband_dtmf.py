"""Keys from callers whose phone sends them only as tones in the audio.

A caller whose SDP offer has no telephone-event (RFC 4733) cannot send keys any
other way than as DTMF tones in its G.711 audio (or as SIP INFO, which the SIP layer
reads). `listen_for_tones` hangs a `speech.dtmf_tones.DtmfDetector` on the call's
RTP stream: every frame the stream plays out, silence fill included, is decoded and
searched, on the RTP engine's thread (about 14 µs a frame with sound, 2 µs on a quiet
line), and each key found joins the call's digits as an RFC 4733 key would.
"""

from __future__ import annotations

from speech import g711
from speech.dtmf_tones import DtmfDetector
from speech.prompts import PCMU
from trunks.voip.media import RtpStream


class ToneListener:
    """Feeds one stream's played-out frames to a detector; keys go to the stream."""

    def __init__(self, media: RtpStream) -> None:
        self.media = media
        self.detector = DtmfDetector()

    def __call__(self, frame: bytes) -> None:
        decode = g711.ulaw_decode if self.media.payload_type == PCMU else g711.alaw_decode
        for digit in self.detector.push(decode(frame)):
            self.media.receive_digit(digit)


def listen_for_tones(media: RtpStream) -> ToneListener:
    """Detect in-band DTMF on `media` from now on."""
    listener = ToneListener(media)
    media.on_frame = listener
    return listener


__all__ = ["ToneListener", "listen_for_tones"]
