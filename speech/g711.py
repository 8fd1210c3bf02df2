"""G.711 mu-law and A-law to and from 16-bit linear PCM, by lookup table.

pyVoIP decodes G.711 to 8-bit audio, which throws away most of what speech
recognition needs. These functions keep 16 bits. The tables follow ITU-T G.711
(the classic Sun reference implementation's segment arithmetic); the tests
compare every one of the 65,536 inputs with the standard library's audioop.
Encoding a 20 ms frame is two numpy indexing operations.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ULAW_SILENCE = 0xFF
"""The mu-law byte for a zero sample."""
ALAW_SILENCE = 0xD5
"""The A-law byte for a zero sample."""

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])

Int16Array = npt.NDArray[np.int16]


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int64) >> 2  # 14-bit magnitude
    mask = np.where(sample < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(sample), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, value)
    code = (segment << 4) | ((value >> (segment + 1)) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _ulaw_decode_table() -> Int16Array:
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int64) >> 3  # 13-bit
    mask = np.where(sample >= 0, 0xD5, 0x55)
    value = np.where(sample >= 0, sample, -sample - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((value >> shift) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode_table() -> Int16Array:
    code = np.arange(256, dtype=np.int64) ^ 0x55
    segment = (code & 0x70) >> 4
    magnitude = ((code & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, magnitude << np.maximum(segment - 1, 0), magnitude)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW_ENCODE = _ulaw_encode_table()
_ULAW_DECODE = _ulaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()
_ALAW_DECODE = _alaw_decode_table()


def _samples(pcm: bytes | Int16Array) -> Int16Array:
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        return np.frombuffer(pcm, dtype="<i2")
    return pcm


def ulaw_encode(pcm: bytes | Int16Array) -> bytes:
    """16-bit little-endian PCM (bytes or int16 array) to mu-law bytes."""
    return bytes(_ULAW_ENCODE[_samples(pcm).astype(np.int32) + 32768])


def ulaw_decode(data: bytes) -> Int16Array:
    """Mu-law bytes to 16-bit samples."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: bytes | Int16Array) -> bytes:
    """16-bit little-endian PCM (bytes or int16 array) to A-law bytes."""
    return bytes(_ALAW_ENCODE[_samples(pcm).astype(np.int32) + 32768])


def alaw_decode(data: bytes) -> Int16Array:
    """A-law bytes to 16-bit samples."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


ULAW_TO_ALAW = alaw_encode(ulaw_decode(bytes(range(256))))
"""A `bytes.translate` table from mu-law to A-law (through 16-bit linear)."""
ALAW_TO_ULAW = ulaw_encode(alaw_decode(bytes(range(256))))
"""A `bytes.translate` table from A-law to mu-law."""
