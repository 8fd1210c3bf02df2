"""Call flows: validation of ivr.yaml, opening hours, and the runner's menu logic."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path

import pytest

from ivr.flow import HoursNode, load_flow
from ivr.records import CallRecord
from ivr.session import CallEnded, Channel, FlowRunner
from ivr.settings import ConfigError
from speech.prompts import PromptCache
from speech.synthesizer import EspeakSynthesizer, Samples
from tests.ivr.conftest import EXAMPLE_FLOW

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def flow_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ivr.yaml"
    path.write_text(text)
    return path


def test_example_flow_loads() -> None:
    flow = load_flow(EXAMPLE_FLOW)
    texts, files = flow.prompts()
    assert flow.start == "welcome" and len(texts) == 10 and files == []


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
    `during_prompt`) or when asked to wait; None means silence."""

    def __init__(self, keys: list[str | None], during_prompt: bool = False) -> None:
        self.keys = keys
        self.during_prompt = during_prompt
        self.played: list[int] = []
        self.hung_up = False

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        self.played.append(len(samples))
        if barge_in and self.during_prompt and self.keys:
            return self.keys.pop(0)
        return None

    def wait_digit(self, timeout: float) -> str | None:
        if not self.keys:
            raise CallEnded
        return self.keys.pop(0)

    def hangup(self) -> None:
        self.hung_up = True


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> FlowRunner:
    prompts = PromptCache(tmp_path_factory.mktemp("prompts"), EspeakSynthesizer())
    open_time = datetime.datetime(2026, 11, 23, 10, tzinfo=SHANGHAI)
    return FlowRunner(load_flow(EXAMPLE_FLOW), prompts, now=lambda: open_time)


def record() -> CallRecord:
    return CallRecord("c1", "carrier-a", "caller", "400", 0.0)


def test_menu_choice_leads_through_the_flow(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel(["2", "1"]), record()
    runner.run(channel, rec)
    assert rec.path == ["welcome", "office_hours", "main_menu", "hours_info", "main_menu",
                        "support", "goodbye"]
    assert rec.digits == "21" and rec.outcome == "completed" and channel.hung_up


def test_barge_in_skips_the_rest_of_the_prompt(runner: FlowRunner) -> None:
    channel, rec = ScriptedChannel(["1"], during_prompt=True), record()
    runner.run(channel, rec)
    assert rec.path[2:] == ["main_menu", "support", "goodbye"] and rec.digits == "1"


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
