"""DTMF talk-off: false digits per hour of speech and hold music, hotline against multimon-ng.

Both detectors hear the same audio in the same run, as the IVR receives it:
8 kHz through G.711 (mu-law or A-law), decoded. hotline's `DtmfDetector` is fed
20 ms frames; multimon-ng's DTMF demodulator reads the same decoded audio
resampled to the 22,050 Hz raw input it expects.

- Speech: the caller turns of ../shared/kb-eval/dev-questions.yaml and every
  question and answer of its faq.yaml, spoken by Piper "joe" (mu-law) and by
  espeak-ng's en-us female and en-gb-x-rp male voices (A-law), and the Mandarin
  turns and answers (dev-questions.zh.yaml, faq.zh.yaml) by espeak-ng cmn
  (mu-law); 0.3 s of quiet line between utterances.
- Hold music: the Ogg tracks of Debian's planetblupi-music-ogg (a game's
  soundtrack: melodies, chords, percussion), when installed, and synthesized
  polyphonic music: chords and melodies of instruments with harmonic series, in
  every key, which puts notes and their harmonics on and near DTMF frequencies.
- Real digits: the 16 keys at several levels, twists and durations over a quiet
  line, each key press counted found or missed; and tones Q.24 says to reject
  (3.5 % off frequency, 20 ms long, twist past the limits), where any digit is
  false. Sequences are matched in order (longest common subsequence), since
  multimon-ng prints no times.

Also measured: the detector's CPU time per 20 ms frame on speech, music and a
key press, and its duration and pause limits on synthesized tones.

    apt-get install multimon-ng sox planetblupi-music-ogg
    python bench/dtmf_talkoff.py [--cache var/bench/dtmf] [--out docs/bench/dtmf-talkoff.md]

Synthesized speech and decoded music are cached in --cache (a few minutes, once).
"""

from __future__ import annotations

import argparse
import datetime
import resource
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import hold_music  # noqa: E402
from bench.key_presses import (  # noqa: E402
    FRAME,
    KEY_SETS,
    KEYS,
    LINE_NOISE_DBFS,
    on_line,
    pairs,
    presses,
    tone_pair,
)
from speech import g711  # noqa: E402
from speech.dtmf_tones import RATE, DtmfDetector, DtmfSettings  # noqa: E402
from speech.synthesizer import EspeakSynthesizer, Samples, resample  # noqa: E402
from tests.speech_audio import speak  # noqa: E402

SHARED = ROOT.parent / "shared" / "kb-eval"
MULTIMON_RATE = 22050
GAP_S = 0.3
"""Quiet line between utterances."""
SYNTH_MUSIC_S = 3600.0
"""Synthesized music: an hour."""
SYNTH_MUSIC_SEED = 1
"""Not 7, the seed of the half hour looked at while choosing `HARMONIC_NOISE`."""
CALLS = 300
"""Concurrent calls, for the CPU estimate."""


@dataclass
class Corpus:
    """One kind of audio, as decoded 8 kHz samples, in pieces."""

    name: str
    kind: str
    pieces: list[Samples]

    @property
    def seconds(self) -> float:
        return sum(len(p) for p in self.pieces) / RATE


def line(samples: Samples, rate: int, law: str) -> Samples:
    """`samples` as the IVR hears them: 8 kHz through G.711 `law` ("ulaw" or "alaw")."""
    narrow = resample(samples, rate, RATE)
    if law == "alaw":
        return g711.alaw_decode(g711.alaw_encode(narrow))
    return g711.ulaw_decode(g711.ulaw_encode(narrow))


def quiet_line(seconds: float, seed: int) -> Samples:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return np.round(noise * 32768 * 10 ** (LINE_NOISE_DBFS / 20)).astype(np.int16)


def texts(language: str) -> list[str]:
    """The dev set's caller turns, then each FAQ entry's questions and answer."""
    suffix = "" if language == "en" else f".{language}"
    turns = yaml.safe_load((SHARED / f"dev-questions{suffix}.yaml").read_text())
    faq = yaml.safe_load((SHARED / f"faq{suffix}.yaml").read_text())
    found = [t["text"] for t in turns]
    for entry in faq["entries"]:
        found += [*entry.get("questions", []), entry["answer"]]
    return [t for t in found if t.strip()]


def spoken(name: str, lines: list[str], say: Callable[[str], Samples], cache: Path) -> Corpus:
    """Each text said and put through the line, cached as one .npy file of utterances."""
    path = cache / f"speech-{name}.npz"
    if not path.exists():
        started = time.monotonic()
        pieces = [say(text) for text in lines]
        np.savez(path, *pieces)
        print(f"synthesized {name}: {len(pieces)} utterances in "
              f"{time.monotonic() - started:.0f} s", flush=True)
    with np.load(path) as saved:
        pieces = [saved[key] for key in saved.files]
    gaps = [quiet_line(GAP_S, i) for i in range(len(pieces))]
    return Corpus(name, "speech", [x for pair in zip(pieces, gaps, strict=True) for x in pair])


def espeak(voice: str, law: str) -> Callable[[str], Samples]:
    synthesizer = EspeakSynthesizer(voice)
    return lambda text: line(*synthesizer.synthesize(text), law)


def speech(cache: Path) -> list[Corpus]:
    english, mandarin = texts("en"), texts("zh")
    return [
        spoken("piper-joe", english, speak, cache),
        spoken("espeak-en-us-f3", english, espeak("en-us+f3", "alaw"), cache),
        spoken("espeak-en-gb-rp", english, espeak("en-gb-x-rp", "alaw"), cache),
        spoken("espeak-cmn", mandarin, espeak("cmn", "ulaw"), cache),
    ]


def music(cache: Path, seconds: float) -> tuple[list[Corpus], bool]:
    """The packaged soundtrack when installed, and synthesized music; both through mu-law."""
    corpora = []
    tracks = hold_music.packaged_tracks(cache)
    if tracks:
        corpora.append(Corpus(f"{hold_music.MUSIC_PACKAGE} ({len(tracks)} tracks)", "music",
                              [line(t, RATE, "ulaw") for t in tracks]))
    pcm = hold_music.synthesize(seconds, SYNTH_MUSIC_SEED)
    minutes = [line(pcm[i:i + 60 * RATE], RATE, "ulaw") for i in range(0, len(pcm), 60 * RATE)]
    corpora.append(Corpus("synthesized polyphonic music", "music", minutes))
    return corpora, bool(tracks)


DURATIONS_MS = (20.0, 23.0, 25.0, 28.0, 30.0, 33.0, 36.0, 40.0)
PAUSES_MS = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0)


@dataclass
class Run:
    """What one detector reported over some audio, and the CPU time it took."""

    digits: str
    cpu_s: float
    seconds: float

    @property
    def us_per_frame(self) -> float:
        return self.cpu_s / (self.seconds / 0.020) * 1e6


def hotline(pieces: Iterable[Samples], settings: DtmfSettings | None = None) -> Run:
    """One `DtmfDetector` fed every piece in turn, in 20 ms frames, as one call."""
    detector, found, samples = DtmfDetector(settings), [], 0
    started = time.process_time()
    for piece in pieces:
        for start in range(0, len(piece), FRAME):
            found += detector.push(piece[start:start + FRAME])
        samples += len(piece)
    return Run("".join(found), time.process_time() - started, samples / RATE)


def multimon(pieces: Iterable[Samples]) -> Run:
    """multimon-ng's DTMF demodulator on the same audio, resampled to its 22,050 Hz raw
    input; CPU time is the child process's own."""
    command = ["multimon-ng", "-c", "-a", "DTMF", "-q", "-t", "raw", "-"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    samples = 0
    for piece in pieces:
        wide = soxr.resample(piece.astype(np.float32), RATE, MULTIMON_RATE)
        process.stdin.write(np.clip(np.round(wide), -32768, 32767).astype("<i2").tobytes())
        samples += len(piece)
    process.stdin.close()
    process.wait()
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    digits = [line.split(":", 1)[1].strip() for line in output[0].decode().splitlines()
              if line.startswith("DTMF:")]
    return Run("".join(digits), cpu, samples / RATE)


def common(a: str, b: str) -> int:
    """The length of the longest common subsequence of `a` and `b`."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def latency_ms(repeat: int = 10) -> list[float]:
    """From the start of a 200 ms press to the end of the 20 ms frame that reported it."""
    rng, found = np.random.default_rng(3), []
    for i, key in enumerate(KEYS * repeat):
        onset = RATE // 5 + int(rng.integers(FRAME))
        audio = np.concatenate([np.zeros(onset), tone_pair(key, 200.0, seed=i), np.zeros(RATE)])
        pcm = g711.ulaw_decode(g711.ulaw_encode(np.round(audio).astype(np.int16)))
        detector = DtmfDetector()
        for start in range(0, len(pcm), FRAME):
            if detector.push(pcm[start:start + FRAME]):
                found.append((start + FRAME - onset) / RATE * 1000)
                break
    return found


VARIANTS = {
    "as shipped": DtmfSettings(),
    "reported after 1 window (min_hits=1)": DtmfSettings(min_hits=1),
    "no second-harmonic check": DtmfSettings(harmonic_db=-100.0),
    "tones' share 0.6 (min_share)": DtmfSettings(min_share=0.6),
    "all three loosened": DtmfSettings(min_hits=1, harmonic_db=-100.0, min_share=0.6),
}
"""The detector with its speech and music guards loosened, one at a time: how far
the audio is from a false digit."""


@dataclass
class TalkOff:
    corpus: Corpus
    hotline: dict[str, Run]
    """By variant."""
    reference: Run


def measure_talk_off(corpora: list[Corpus]) -> list[TalkOff]:
    found = []
    for corpus in corpora:
        runs = {name: hotline(corpus.pieces, settings) for name, settings in VARIANTS.items()}
        reference = multimon(corpus.pieces)
        shipped = runs["as shipped"]
        print(f"{corpus.name}: {corpus.seconds / 3600:.2f} h, hotline {len(shipped.digits)} "
              f"({shipped.digits[:20]}), multimon-ng {len(reference.digits)} "
              f"({reference.digits[:20]})", flush=True)
        found.append(TalkOff(corpus, runs, reference))
    return found


def per_hour(count: int, hours: float) -> str:
    """A rate, or for no event the 95 % upper bound (3 events over the time)."""
    return f"{count / hours:.1f}" if count else f"0 (< {3 / hours:.1f})"


def ratio(ours: int, theirs: int) -> str:
    if theirs == 0:
        return "both 0" if ours == 0 else "-"
    return f"{ours / theirs:.2f}"


def talk_off_rows(results: list[TalkOff]) -> list[str]:
    rows = []
    groups = [(r.corpus.name, r.corpus.kind, [r]) for r in results]
    for kind in ("speech", "music"):
        groups.append((f"**all {kind}**", kind, [r for r in results if r.corpus.kind == kind]))
    for name, kind, members in groups:
        hours = sum(r.corpus.seconds for r in members) / 3600
        ours = sum(len(r.hotline["as shipped"].digits) for r in members)
        theirs = sum(len(r.reference.digits) for r in members)
        rows.append(f"| {name} | {kind} | {hours:.2f} | {ours} | {per_hour(ours, hours)} | "
                    f"{theirs} | {per_hour(theirs, hours)} | {ratio(ours, theirs)} |")
    return rows


def variant_rows(results: list[TalkOff]) -> list[str]:
    rows = []
    for name in VARIANTS:
        cells = []
        for kind in ("speech", "music"):
            members = [r for r in results if r.corpus.kind == kind]
            hours = sum(r.corpus.seconds for r in members) / 3600
            cells.append(per_hour(sum(len(r.hotline[name].digits) for r in members), hours))
        rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return rows


def key_set_rows() -> list[str]:
    rows = []
    for keys in KEY_SETS:
        audio = keys.audio()
        cells = []
        for run in (hotline([audio]), multimon([audio])):
            if keys.expect:
                extra = len(run.digits) - common(keys.keys, run.digits)
                cells.append(f"{common(keys.keys, run.digits)}/{len(keys.keys)}"
                             + (f", {extra} extra" if extra else ""))
            else:
                cells.append(f"{len(run.digits)} false")
        verdict = "accept" if keys.expect else "reject"
        rows.append(f"| {keys.label} | {verdict} | {cells[0]} | {cells[1]} |")
        print(rows[-1], flush=True)
    return rows


def limit_rows(repeat: int) -> tuple[list[str], list[str]]:
    """Share of tones found by length, and presses counted per pair by pause."""
    durations, pauses = [], []
    keys = KEYS * repeat
    for ms in DURATIONS_MS:
        audio = presses(keys, ms, 100.0, seed=int(ms))
        shares = [common(keys, run.digits) / len(keys) for run in (hotline([audio]),
                                                                    multimon([audio]))]
        durations.append(f"| {ms:g} | {shares[0]:.0%} | {shares[1]:.0%} |")
    for ms in PAUSES_MS:
        audio = pairs(ms, repeat)
        counts = [len(run.digits) / len(keys) for run in (hotline([audio]), multimon([audio]))]
        pauses.append(f"| {ms:g} | {counts[0]:.2f} | {counts[1]:.2f} |")
    return durations, pauses


def cost_rows(corpora: list[Corpus]) -> tuple[list[str], float]:
    """CPU per 20 ms of audio, best of three runs (this machine is shared): on the first
    two minutes of every speech and music corpus, a quiet line and a held key. Also
    hotline's figure for speech."""
    rows, speech_us = [], 0.0
    excerpts = {kind: [np.concatenate(c.pieces)[:120 * RATE] for c in corpora
                       if c.kind == kind] for kind in ("speech", "music")}
    samples = {f"{kind}, 2 minutes of each corpus": excerpt
               for kind, excerpt in excerpts.items()}
    samples["quiet line (-60 dBFS), 60 s"] = [on_line([np.zeros(60 * RATE)], 1)]
    samples["one key held, 10 s"] = [on_line([tone_pair("5", 10_000.0)], 2)]
    for name, pieces in samples.items():
        ours = min(hotline(pieces).us_per_frame for _ in range(3))
        theirs = min(multimon(pieces).us_per_frame for _ in range(3))
        rows.append(f"| {name} | {ours:.1f} | {theirs:.1f} |")
        speech_us = ours if name.startswith("speech") else speech_us
    return rows, speech_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench" / "dtmf")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "dtmf-talkoff.md")
    parser.add_argument("--music-minutes", type=float, default=SYNTH_MUSIC_S / 60)
    parser.add_argument("--repeat", type=int, default=10, help="presses of each key per limit")
    args = parser.parse_args()
    if shutil.which("multimon-ng") is None:
        sys.exit("multimon-ng is the reference and is not installed: apt-get install multimon-ng")
    args.cache.mkdir(parents=True, exist_ok=True)
    corpora = speech(args.cache)
    found, packaged = music(args.cache, args.music_minutes * 60)
    if not packaged:
        print(f"{hold_music.MUSIC_PACKAGE} (or sox) is not installed: synthesized music only",
              flush=True)
    corpora += found
    results = measure_talk_off(corpora)
    keys = key_set_rows()
    durations, pauses = limit_rows(args.repeat)
    costs, speech_us = cost_rows(corpora)
    latencies = latency_ms()
    help_text = subprocess.run(["multimon-ng", "-h"], capture_output=True, text=True)
    reference = (help_text.stdout + help_text.stderr).splitlines()[0].strip()
    report(args.out, Findings(results, keys, durations, pauses, costs, speech_us, latencies),
           packaged, reference, args.repeat)


@dataclass
class Findings:
    """Everything the report shows."""

    talk_off: list[TalkOff]
    keys: list[str]
    durations: list[str]
    pauses: list[str]
    costs: list[str]
    speech_us: float
    latencies: list[float]


def reading(results: list[TalkOff]) -> str:
    """Both detectors' talk-off in a sentence each."""
    said = []
    for name in ("hotline", "multimon-ng"):
        parts = []
        for kind in ("speech", "music"):
            members = [r for r in results if r.corpus.kind == kind]
            hours = sum(r.corpus.seconds for r in members) / 3600
            count = sum(len(r.hotline["as shipped"].digits if name == "hotline"
                            else r.reference.digits) for r in members)
            rate = (f"{count / hours:.1f} per hour" if count else
                    f"under {3 / hours:.1f} per hour at 95 % confidence")
            parts.append(f"{count} in {hours:.1f} hours of {kind} ({rate})")
        said.append(f"{name} reported {parts[0]} and {parts[1]}.")
    return " ".join(said)


def paragraph(text: str, indent: str = "") -> str:
    return textwrap.fill(" ".join(text.split()), 88, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False)


def table(header: str, rows: list[str]) -> str:
    columns = header.count("|") - 1
    return "\n".join([header, "|" + "---|" * columns, *rows])


def report(out: Path, found: Findings, packaged: bool, reference: str, repeat: int) -> None:
    results = found.talk_off
    speech_h = sum(r.corpus.seconds for r in results if r.corpus.kind == "speech") / 3600
    music_h = sum(r.corpus.seconds for r in results if r.corpus.kind == "music") / 3600
    package = hold_music.MUSIC_PACKAGE
    kinds = (f"the {package} soundtrack (Debian's package: a game's melodies, chords and "
             "percussion) and synthesized polyphonic music" if packaged else
             f"synthesized polyphonic music only: no music file was found on the machine "
             f"({package} was not installed)")
    tables = [
        table("| audio | kind | hours | hotline false digits | per hour | multimon-ng false "
              "digits | per hour | hotline / multimon-ng |", talk_off_rows(results)),
        table("| hotline settings | speech, false digits per hour | music, per hour |",
              variant_rows(results)),
        table("| key presses (16 keys x 4, mu-law) | Q.24 | hotline | multimon-ng |",
              found.keys),
        table("| tone ms | hotline found | multimon-ng found |", found.durations),
        table("| pause ms | hotline presses per pair | multimon-ng presses per pair |",
              found.pauses),
        table("| audio | hotline CPU us per 20 ms | multimon-ng CPU us per 20 ms |",
              found.costs),
    ]
    print("\n\n".join(tables))
    text = [
        f"# {__doc__.splitlines()[0].rstrip('.')}",
        paragraph(f"""Measured by `bench/dtmf_talkoff.py` on {datetime.date.today()}: hotline's
            `speech.dtmf_tones.DtmfDetector` with its defaults and the DTMF demodulator of
            {reference} (Debian's multimon-ng package) on the same audio in the same run.
            Audio is what the IVR decodes from a call: 8 kHz through G.711, fed to hotline
            in 20 ms frames and to multimon-ng resampled to its 22,050 Hz raw input."""),
        "\n".join([
            paragraph(f"""- Speech, {speech_h:.1f} hours: the caller turns of
                shared/kb-eval/dev-questions.yaml and every question and answer of faq.yaml,
                said by Piper "joe" (mu-law) and espeak-ng's en-us female (+f3) and
                en-gb-x-rp voices (A-law); the Mandarin turns and answers
                (dev-questions.zh.yaml, faq.zh.yaml) by espeak-ng cmn (mu-law). 0.3 s of
                quiet line between utterances. All synthesized: no recorded speech is on the
                machine.""", "  "),
            paragraph(f"""- Hold music, {music_h:.1f} hours: {kinds}. The synthesized music
                is chords, a bass and two melodies of instruments with harmonic series, in
                every key and at tunings up to 40 cents off A440, with duets where two notes
                hold most of the power: notes and their harmonics land on and near DTMF
                frequencies, the classic talk-off trap. Its seed ({SYNTH_MUSIC_SEED}) is not
                the one looked at while choosing the detector's `HARMONIC_NOISE` (7).""",
                      "  "),
            paragraph("""- A false digit is any digit reported in speech or music. With none
                reported, the rate shows the 95 % upper bound (3 events over the hours
                heard).""", "  ")]),
        "## Talk-off", tables[0],
        paragraph(f"""Reading: {reading(results)} The speech is synthesized, steadier than
            callers are, and there is no recorded talk-off test material here (such as the
            Bellcore talk-off tapes), so real callers will come closer to a false digit than
            these voices did."""),
        paragraph("""How far the audio is from a false digit: hotline with one guard loosened
            at a time (same audio)."""), tables[1],
        "## Real key presses, and tones Q.24 says to reject",
        paragraph("""Each condition presses all 16 keys 4 times, with 100 ms pauses unless
            stated, each at a random offset in a 20 ms frame, over a quiet line (-60 dBFS),
            through mu-law. Levels are per tone; twist is the high-group tone's level less
            the low one's (normal: the high tone louder). Found: the longest common
            subsequence with the keys pressed, since multimon-ng prints no times."""),
        tables[2],
        "## Shortest tone, shortest pause",
        paragraph(f"""All 16 keys {repeat} times each at -10 dBm0 through mu-law, at random
            offsets in a frame. Q.24: tones of 40 ms must count and tones under 23 ms must
            not; a 40 ms pause must separate two presses of a key, and a drop-out of
            10-20 ms inside a press should not split it."""),
        tables[3], tables[4],
        "## Cost",
        paragraph(f"""CPU time per 20 ms of audio, one stream at a time, best of three runs:
            hotline's `push` called from Python (process time, the frame slicing included);
            multimon-ng's process (user and system time, reading 22,050 Hz input), not
            counting the resampling done for it. This 2-core machine is shared with other
            work, so times vary from run to run. At the speech figure, {CALLS} calls with
            sound on every frame would keep {CALLS * 50 * found.speech_us / 1e6:.0%} of a
            core busy. A key press is reported {np.median(found.latencies):.0f} ms after it
            starts (median; at most {max(found.latencies):.0f} ms), counted to the end of
            the 20 ms frame that reports it."""),
        tables[5],
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(text) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
