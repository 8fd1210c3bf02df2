"""Call flows: validation of ivr.yaml, opening hours, and the runner's menu logic."""

from __future__ import annotations

import contextlib
import datetime
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from failover.router import Need, RoutePlan
from ivr.channels.base import CallEnded, Channel, Heard
from ivr.flow.model import HoursNode, load_flow
from ivr.flow.oncall import load_oncall
from ivr.flow.runner import FlowRunner
from ivr.flow.voicebot import VoiceBot
from ivr.records import CallRecord
from ivr.settings import ConfigError
from speech.prompts import PromptCache
from speech.recognizer import Recognizer
from speech.synthesizer import EspeakSynthesizer, Samples
from tests.ivr.conftest import EXAMPLE_FLOW, EXAMPLE_ONCALL
from trunks.voip.outbound import OutboundCall, Outcome

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def flow_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ivr.yaml"
    path.write_text(text)
    return path


def test_example_flow_loads() -> None:
    flow = load_flow(EXAMPLE_FLOW)
    texts, files = flow.prompts()
    assert flow.start == "welcome" and files == []
    assert "Please tell me your question." in texts
    assert flow.forwards


@pytest.mark.parametrize(("text", "expected"), [
    ("start: nowhere\nnodes:\n  a: {type: goto, next: a}\n",
     "line 1: (top level): start: no node named 'nowhere'"),
    ("start: a\nnodes:\n  a: {type: menu, text: hi, options: {'1': b}, failure: a}\n",
     "nodes.a.options.1: no node named 'b'"),
    ("start: a\nnodes:\n  a: {type: say, file: missing.wav, next: a}\n",
     "nodes.a.file: no such file"),
    ("start: a\nnodes:\n  a: {type: say, next: a}\n",
     "a say node needs exactly one of text or file"),
    ("start: a\nnodes:\n  a: {type: menu, text: hi, options: {'12': a}, failure: a}\n",
     "option keys must be single DTMF digits"),
    ("start: a\nnodes:\n  a: {type: hours, timezone: Mars/Base, open: {}, open_next: a,"
     " closed_next: a}\n", "unknown time zone 'Mars/Base'"),
    ("start: a\nnodes:\n  a: {type: hours, timezone: UTC, open: {mon-fri: '9-17'}, open_next: a,"
     " closed_next: a}\n", "expected opening hours such as 09:00-18:00, got '9-17'"),
    ("start: a\nnodes:\n  a: {type: dance, next: a}\n", "nodes.a: Input tag 'dance'"),
    ("start: a\nnodes:\n  a: {type: forward, ring_s: 500, failure: a}\n",
     "nodes.a.forward.ring_s: Input should be less than or equal to 120"),
    ("start: a\nnodes:\n  a: {type: forward, failure: b}\n", "nodes.a.failure: no node named 'b'"),
    ("start: a\nnodes:\n  a: {type: voicebot, person: b}\n  b: {type: hangup}\n",
     "nodes.a.person: 'b' is not a forward node"),
    ("start: a\nnodes:\n  a: {type: voicebot, questions: 0}\n",
     "nodes.a.voicebot.questions: Input should be greater than or equal to 1"),
])
def test_bad_flows_are_rejected_at_start_up(tmp_path: Path, text: str, expected: str) -> None:
    path = flow_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_flow(path)
    assert expected in str(caught.value) and str(caught.value).startswith(str(path))


def test_prompt_files_are_relative_to_the_flow(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "hi.wav").write_bytes(b"")
    flow = load_flow(flow_file(tmp_path, "start: a\nnodes:\n  a: {type: say, "
                               "file: prompts/hi.wav, next: b}\n  b: {type: hangup}\n"))
    assert flow.prompts()[1] == [tmp_path / "prompts" / "hi.wav"]


@pytest.mark.parametrize(("moment", "is_open"), [
    ("2026-11-23T08:29", False), ("2026-11-23T08:30", True), ("2026-11-23T17:59", True),
    ("2026-11-23T18:00", False), ("2026-11-28T11:00", True), ("2026-11-29T11:00", False),
    ("2026-10-01T10:00", False),
])
def test_opening_hours_in_the_flows_time_zone(moment: str, is_open: bool) -> None:
    hours = load_flow(EXAMPLE_FLOW).nodes["office_hours"]
    assert isinstance(hours, HoursNode)
    local = datetime.datetime.fromisoformat(moment).replace(tzinfo=SHANGHAI)
    assert hours.is_open(local) is is_open
    assert hours.is_open(local.astimezone(datetime.UTC)) is is_open, "any zone in, same answer"


class ScriptedChannel(Channel):
    """A caller who presses `keys` in turn: a key is pressed during the next prompt (when
    `during_prompt`) or when asked to wait; None means silence. To the voice bot the
    caller answers with `heard`, in turn (an exception is raised instead, as a failing
    recognizer would); the call ends when the script does."""

    def __init__(self, keys: list[str | None], during_prompt: bool = False,
                 heard: list[Heard | Exception] | None = None) -> None:
        self.keys = keys
        self.during_prompt = during_prompt
        self.heard = list(heard or [])
        self.played: list[int] = []
        self.hung_up = False
        self.hang_up_while_ringing = False
        self.bridged: OutboundCall | None = None

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        self.played.append(len(samples))
        if barge_in and self.during_prompt and self.keys:
            return self.keys.pop(0)
        return None

    def wait_digit(self, timeout: float) -> str | None:
        if not self.keys:
            raise CallEnded
        return self.keys.pop(0)

    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        if samples is not None:
            self.played.append(len(samples))
        if not self.heard:
            raise CallEnded
        heard = self.heard.pop(0)
        if isinstance(heard, Exception):
            raise heard
        return heard

    def ring(self, leg: OutboundCall, seconds: float) -> Outcome:
        if self.hang_up_while_ringing:  # the caller hangs up: the leg is cancelled
            leg.outcome, leg.status, leg.reason = Outcome.CANCELLED, 487, "Request Terminated"
            raise CallEnded("caller hung up")
        return leg.outcome

    def bridge(self, leg: OutboundCall) -> None:
        self.bridged = leg

    def hangup(self) -> None:
        self.hung_up = True


@dataclass
class FakeLeg:
    outcome: Outcome
    status: int | None = None
    reason: str = ""


class ScriptedDialer:
    """Trunks in order of preference; the outcome of calling a number through a trunk
    (refused unless scripted)."""

    def __init__(self, trunks: list[str],
                 outcomes: dict[tuple[str, str], Outcome] | None = None,
                 passed_over: dict[str, str] | None = None) -> None:
        self.trunks, self.outcomes = trunks, outcomes or {}
        self.passed_over = passed_over or {}
        self.dialled: list[tuple[str, str]] = []
        self.busy_people: set[str] = set()
        self.busy_during_bridge: set[str] = set()
        self.elsewhere: set[str] = set()
        """People another node takes between `available` and ringing them."""

    def available(self, people: Sequence[str]) -> list[str]:
        return [p for p in people if p not in self.busy_people]

    @contextlib.contextmanager
    def busy(self, person: str, take_over: bool = False) -> Iterator[bool]:
        if person in self.elsewhere and not take_over:
            yield False
            return
        self.busy_people.add(person)
        try:
            yield True
        finally:
            self.busy_during_bridge = set(self.busy_people)
            self.busy_people.discard(person)

    def plan(self, need: Need, exclude: frozenset[str] = frozenset(),
             only: str | None = None) -> RoutePlan:
        return RoutePlan(need, tuple(t for t in self.trunks if t not in exclude),
                         notes=self.passed_over)

    def place(self, plan: RoutePlan, number: str, ring_s: float,
              caller_id: str | None = None) -> tuple[str, OutboundCall] | None:
        if not plan.trunks:
            return None
        trunk = plan.trunks[0]
        self.dialled.append((number, trunk))
        leg = FakeLeg(self.outcomes.get((number, trunk), Outcome.REFUSED), 486)
        return trunk, cast(OutboundCall, leg)


OPEN_TIME = datetime.datetime(2026, 11, 23, 10, tzinfo=SHANGHAI)
"""A Monday morning: the office is open; bob's turn on call, carol's next."""


def make_runner(prompts: PromptCache, dialer: ScriptedDialer, bot: VoiceBot) -> FlowRunner:
    return FlowRunner(load_flow(EXAMPLE_FLOW), prompts, now=lambda: OPEN_TIME,
                      oncall=load_oncall(EXAMPLE_ONCALL), dialer=dialer, bot=bot)


SILENT = [Heard()] * 3
"""A caller who says nothing to the voice bot: its greeting and two reprompts."""


@pytest.fixture
def runner(espeak_prompts: PromptCache, voicebot: VoiceBot) -> FlowRunner:
    # no trunk usable: nobody to forward to
    return make_runner(espeak_prompts, ScriptedDialer([]), voicebot)


def record() -> CallRecord:
    return CallRecord("c1", "carrier-a", "caller", "400", 0.0)


def test_menu_choice_leads_through_the_flow(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel(["2", "1"], heard=SILENT), record()
    runner.run(channel, rec)
    assert rec.path == ["welcome", "office_hours", "main_menu", "hours_info", "main_menu",
                        "support", "nobody_free", "assistant", "goodbye"]
    assert rec.digits == "21" and rec.outcome == "bot: no question" and channel.hung_up


def test_the_menu_leads_to_the_voice_bot(runner: FlowRunner) -> None:
    channel = ScriptedChannel(["3"], heard=[Heard(text="how often should the oil be changed"),
                                           Heard(digit="1"), Heard(text="no thank you")])
    runner.run(channel, rec := record())
    assert rec.path == ["welcome", "office_hours", "main_menu", "assistant", "goodbye"]
    assert rec.outcome == "bot: answered" and rec.bot_turns[0]["id"] == "service-interval"
    assert channel.hung_up and not channel.heard


def test_barge_in_skips_the_rest_of_the_prompt(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel(["1"], during_prompt=True, heard=SILENT), record()
    runner.run(channel, rec)
    assert rec.path[2:] == ["main_menu", "support", "nobody_free", "assistant", "goodbye"]
    assert rec.digits == "1"


def test_invalid_and_missing_input_retry_then_fail(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel(["7", None, "5"]), record()
    runner.run(channel, rec)
    assert rec.path == ["welcome", "office_hours", "main_menu", "goodbye"]
    assert rec.digits == "75"
    # welcome, menu x3, invalid, no-input (no apology after the last try), goodbye
    assert len(channel.played) == 1 + 3 + 2 + 1


def test_caller_hanging_up_ends_the_flow(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel([]), record()
    runner.run(channel, rec)
    assert rec.outcome == "caller hung up" and not channel.hung_up


def test_a_flow_that_loops_forever_is_stopped(tmp_path: Path) -> None:
    flow = load_flow(flow_file(tmp_path, "start: a\nnodes:\n  a: {type: goto, next: b}\n"
                               "  b: {type: goto, next: a}\n"))
    channel, rec = ScriptedChannel([]), record()
    FlowRunner(flow, PromptCache(tmp_path / "p", EspeakSynthesizer())).run(channel, rec)
    assert rec.outcome == "flow loop" and len(rec.path) == 200 and channel.hung_up


def test_forward_tries_next_trunk_then_next_person(espeak_prompts: PromptCache,
                                                   voicebot: VoiceBot) -> None:
    bob, carol = "13800000002", "13800000003"
    dialer = ScriptedDialer(["carrier-a", "carrier-b"], {
        (carol, "carrier-a"): Outcome.TRUNK_FAILED, (carol, "carrier-b"): Outcome.ANSWERED},
        passed_over={"carrier-c": "drained by alice: carrier maintenance"})
    channel, rec = ScriptedChannel(["1"]), record()
    make_runner(espeak_prompts, dialer, voicebot).run(channel, rec)
    # bob (on duty) refuses: not retried on carrier-b; carol: trunk fails, next trunk answers
    assert dialer.dialled == [(bob, "carrier-a"), (carol, "carrier-a"), (carol, "carrier-b")]
    assert rec.forwarded_to == "carol" and rec.outcome == "forwarded"
    assert [(a["person"], a["trunk"], a["outcome"]) for a in rec.forward_attempts] == [
        ("bob", "carrier-a", "refused"), ("carol", "carrier-a", "trunk failed"),
        ("carol", "carrier-b", "answered")]
    assert rec.path[-2:] == ["support", "goodbye"] and channel.bridged is not None
    assert dialer.busy_during_bridge == {"carol"} and not dialer.busy_people
    assert rec.routing == {"carrier-c": "drained by alice: carrier maintenance"}


def test_a_caller_hanging_up_while_staff_is_rung_is_recorded(espeak_prompts: PromptCache,
                                                             voicebot: VoiceBot) -> None:
    channel = ScriptedChannel(["1"])
    channel.hang_up_while_ringing = True
    dialer = ScriptedDialer(["carrier-a"])
    make_runner(espeak_prompts, dialer, voicebot).run(channel, rec := record())
    assert dialer.dialled == [("13800000002", "carrier-a")]
    assert rec.forward_attempts == [{"person": "bob", "trunk": "carrier-a",
                                     "outcome": "cancelled", "status": 487,
                                     "reason": "Request Terminated"}]
    assert rec.outcome == "caller hung up" and rec.forwarded_to is None


def test_forward_skips_a_person_busy_with_another_caller(espeak_prompts: PromptCache,
                                                         voicebot: VoiceBot) -> None:
    carol = "13800000003"
    dialer = ScriptedDialer(["carrier-a"], {(carol, "carrier-a"): Outcome.ANSWERED})
    dialer.busy_people.add("bob")  # bob is on duty, but talking to another caller
    make_runner(espeak_prompts, dialer, voicebot).run(ScriptedChannel(["1"]), rec := record())
    assert dialer.dialled == [(carol, "carrier-a")] and rec.forwarded_to == "carol"


def test_forward_moves_on_from_a_person_another_node_rings_first(
        espeak_prompts: PromptCache, voicebot: VoiceBot) -> None:
    carol = "13800000003"
    dialer = ScriptedDialer(["carrier-a"], {(carol, "carrier-a"): Outcome.ANSWERED})
    dialer.elsewhere.add("bob")  # free when the roster was read, rung by another node since
    make_runner(espeak_prompts, dialer, voicebot).run(ScriptedChannel(["1"]), rec := record())
    assert dialer.dialled == [(carol, "carrier-a")] and rec.forwarded_to == "carol"
    assert rec.forward_attempts[0] == {"person": "bob", "trunk": "", "outcome": "busy elsewhere",
                                       "status": None, "reason": "busy on another node"}


def test_forward_stops_after_its_number_of_people(espeak_prompts: PromptCache,
                                                  voicebot: VoiceBot) -> None:
    dialer = ScriptedDialer(["carrier-a"])  # everyone refuses
    make_runner(espeak_prompts, dialer, voicebot).run(ScriptedChannel(["1"], heard=SILENT),
                                                      rec := record())
    assert [number for number, _ in dialer.dialled] == ["13800000002", "13800000003"], \
        "people: 2 - alice, third in the roster, is not rung"
    assert rec.forwarded_to is None
    assert rec.path[-3:] == ["nobody_free", "assistant", "goodbye"]


def test_a_flow_that_forwards_needs_a_roster(espeak_prompts: PromptCache) -> None:
    with pytest.raises(ValueError, match="needs an on-call roster"):
        FlowRunner(load_flow(EXAMPLE_FLOW), espeak_prompts)


def test_a_flow_with_a_voice_bot_needs_one(espeak_prompts: PromptCache) -> None:
    with pytest.raises(ValueError, match="it needs one"):
        FlowRunner(load_flow(EXAMPLE_FLOW), espeak_prompts, oncall=load_oncall(EXAMPLE_ONCALL),
                   dialer=ScriptedDialer([]))
