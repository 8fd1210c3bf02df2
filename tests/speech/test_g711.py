"""G.711 against the standard library's reference codec, on every possible input."""

from __future__ import annotations

import audioop  # the reference; audioop-lts provides it from Python 3.13 on

import numpy as np
import pytest

from speech.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_bit_exact_with_audioop() -> None:
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_round_trip_keeps_16_bit_resolution() -> None:
    tone = (np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 12000).astype(np.int16)
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        back = decode(encode(tone))
        assert back.dtype == np.int16 and len(back) == 160
        error = np.abs(back.astype(int) - tone.astype(int))
        assert error.max() <= 512 and error.mean() < 150, "G.711's step is 2-3% of the level"
        assert len(set(back.tolist())) > 60, "far more than pyVoIP's 8-bit levels survive"


def test_silence_bytes_and_array_input() -> None:
    zeros = np.zeros(160, dtype=np.int16)
    assert ulaw_encode(zeros) == bytes([ULAW_SILENCE]) * 160
    assert alaw_encode(zeros.tobytes()) == bytes([ALAW_SILENCE]) * 160
    assert ulaw_decode(bytes([ULAW_SILENCE])).tolist() == [0]


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        ulaw_encode(b"\x00\x01\x02")
