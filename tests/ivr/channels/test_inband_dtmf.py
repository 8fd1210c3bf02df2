"""Keys sent as tones in the audio, by a caller whose offer had no telephone-event: the
detector hangs on the RTP stream and its keys join the call's digits."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from ivr.channels.inband_dtmf import listen_for_tones
from speech import g711
from speech.prompts import PCMA, PCMU
from trunks.voip.media import RtpEngine
from trunks.voip.rtp import RtpPacket, build_rtp

KEYS = {"5": (770.0, 1336.0), "#": (941.0, 1477.0)}


def tone_audio(key: str | None, seconds: float) -> np.ndarray:
    """A key's two tones at -10 dBm0 each (silence for None), 8 kHz 16-bit."""
    t = np.arange(int(8000 * seconds)) / 8000
    if key is None:
        return np.zeros(len(t), dtype=np.int16)
    low, high = KEYS[key]
    wave = 0.25 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return (wave * 32767 * 0.6).astype(np.int16)


@pytest.fixture
def phone() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def send_audio(phone: socket.socket, port: int, samples: np.ndarray, payload_type: int,
               first_seq: int = 0) -> int:
    """Send `samples` as 20 ms packets, paced; return the next sequence number."""
    encode = g711.ulaw_encode if payload_type == PCMU else g711.alaw_encode
    payload = encode(samples)
    start = time.monotonic()
    for n, offset in enumerate(range(0, len(payload), 160)):
        seq = first_seq + n
        phone.sendto(build_rtp(RtpPacket(payload_type, seq, seq * 160, 0x70E5,
                                          payload[offset:offset + 160])), ("127.0.0.1", port))
        time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
    return first_seq + len(payload) // 160


@pytest.mark.parametrize("payload_type", [PCMU, PCMA])
def test_tones_in_the_audio_become_keys_once_each(engine: RtpEngine, phone: socket.socket,
                                                  payload_type: int) -> None:
    stream = engine.open(payload_type, remote=phone.getsockname())
    listen_for_tones(stream)
    port = stream.local_address[1]
    seq = send_audio(phone, port, tone_audio(None, 0.1), payload_type)
    seq = send_audio(phone, port, tone_audio("5", 0.12), payload_type, seq)
    seq = send_audio(phone, port, tone_audio(None, 0.1), payload_type, seq)
    seq = send_audio(phone, port, tone_audio("#", 0.12), payload_type, seq)
    send_audio(phone, port, tone_audio(None, 0.2), payload_type, seq)
    keys = [stream.digits.get(timeout=2), stream.digits.get(timeout=2)]
    assert keys == ["5", "#"]
    time.sleep(0.3)
    assert stream.digits.empty(), "each press reported once"
    stream.close()


def test_a_melody_is_not_a_key(engine: RtpEngine, phone: socket.socket) -> None:
    stream = engine.open(PCMU, remote=phone.getsockname())
    listen_for_tones(stream)
    t = np.arange(8000) / 8000
    notes = np.concatenate([np.sin(2 * np.pi * hz * t[:1600]) for hz in (440, 554, 659, 880,
                                                                          740)])
    send_audio(phone, stream.local_address[1], (notes * 8000).astype(np.int16), PCMU)
    time.sleep(0.2)
    assert stream.digits.empty()
    stream.close()
