"""Call flows: the menus of `config/ivr.yaml`, validated before any call arrives.

A flow is a set of named nodes and a `start`. Node types:

- `say`: speak `text` (synthesized) or play `file` (a WAV), then go to `next`;
- `menu`: a prompt and DTMF `options` (digit -> node), with barge-in on the
  first digit, a `timeout_s` for input, `retries`, and `invalid` / `no_input`
  prompts; after the last failed try, go to `failure`;
- `hours`: go to `open_next` or `closed_next` by weekly `open` hours and
  `holidays`, in a `timezone`;
- `forward`: say `text` (optional), then ring the on-call roster of
  `oncall.yaml` (each person for `ring_s`, through the best trunk, the next
  trunk if one fails) while the caller hears ringback; bridge the caller to
  whoever answers, and go to `next` when they hang up (no `next`: end the
  call); nobody answers: go to `failure`;
- `voicebot`: the voice assistant (`ivr.flow.voicebot`): greet, listen to the caller's
  question, answer it from the FAQ, ask whether that helped (yes/no or 1/2), and open
  a ticket when it could not help (on Twilio, after recording the caller's message); a
  request for a person goes to the `person` node (a forward) while nobody has yet been
  tried in the call; then go to `next` (none: end the call);
- `goto`: go to `next`;
- `hangup`: optionally say something, then end the call.

A reference to a missing node or prompt file is a configuration error at start-up.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ivr.settings import check_timezone, load_yaml

DEFAULT_FLOW = Path("config/ivr.yaml")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def targets(self) -> Iterator[tuple[str, str]]:
        """(field, node name) for every node this one may go to."""
        for name in ("next", "failure", "open_next", "closed_next", "person"):
            value = getattr(self, name, None)
            if value:
                yield name, value


class Spoken(_Node):
    text: str | None = None
    file: Path | None = None

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base")
        if value is None or value.is_absolute() or base is None:
            return value
        return Path(base) / value

    def prompts(self) -> Iterator[str | Path]:
        if self.text:
            yield self.text
        if self.file:
            yield self.file


class SayNode(Spoken):
    type: Literal["say"]
    next: str

    @model_validator(mode="after")
    def _one_prompt(self) -> SayNode:
        if (self.text is None) == (self.file is None):
            raise ValueError("a say node needs exactly one of text or file")
        return self


class MenuNode(Spoken):
    type: Literal["menu"]
    options: dict[str, str] = Field(min_length=1)
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(3, ge=1)
    invalid: str = "Sorry, that is not one of the choices."
    no_input: str = "Sorry, I did not hear a choice."
    failure: str

    @field_validator("options")
    @classmethod
    def _digits(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key in value if key not in "0123456789*#" or len(key) != 1]
        if bad:
            raise ValueError(f"option keys must be single DTMF digits; not {bad}")
        return value

    def targets(self) -> Iterator[tuple[str, str]]:
        yield from super().targets()
        for digit, node in self.options.items():
            yield f"options.{digit}", node

    def prompts(self) -> Iterator[str | Path]:
        yield from super().prompts()
        yield self.invalid
        yield self.no_input


class HoursNode(_Node):
    type: Literal["hours"]
    timezone: str
    open: dict[str, str | list[str]]
    holidays: list[datetime.date] = []
    open_next: str
    closed_next: str

    _zone = field_validator("timezone")(check_timezone)

    @field_validator("open")
    @classmethod
    def _hours(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for days, spans in value.items():
            _days(days)
            for span in [spans] if isinstance(spans, str) else spans:
                _span(span)
        return value

    def is_open(self, moment: datetime.datetime) -> bool:
        """Whether `moment` (any time zone) falls in opening hours, holidays excluded."""
        local = moment.astimezone(zoneinfo.ZoneInfo(self.timezone))
        if local.date() in self.holidays:
            return False
        day = DAYS[local.weekday()]
        for days, spans in self.open.items():
            if day in _days(days):
                for span in [spans] if isinstance(spans, str) else spans:
                    start, end = _span(span)
                    if start <= local.time() < end:
                        return True
        return False


class ForwardNode(Spoken):
    type: Literal["forward"]
    ring_s: float = Field(20.0, gt=0, le=120)
    """How long each person's phone rings."""
    people: int | None = Field(None, ge=1)
    """How many people of the roster to try, in order; unset: everyone."""
    next: str | None = None
    failure: str


class VoicebotNode(Spoken):
    """The voice assistant; `text` is its greeting. Every prompt is synthesized once at
    start-up, and so is every FAQ answer."""

    type: Literal["voicebot"]
    text: str | None = ("Hello, this is the hotline's voice assistant. "
                        "Please tell me your question in a few words.")
    reprompt: str = "Sorry, I did not hear you. Please tell me your question."
    ask: str = "Please tell me your question."
    rephrase: str = "Sorry, I have no answer to that. Could you say it in other words?"
    clarify: str = "Did you mean"
    choose: str = "Say or press 1 for the first, 2 for the second."
    confirm: str = "Is your question about this"
    yes_no: str = "Say yes or no."
    confirm_above: float = Field(0.5, ge=0.0, le=1.0)
    """Below the search's answer threshold but at least this confident: ask the caller
    whether the best entry is what they mean, instead of asking them to rephrase."""
    help_check: str = "Did that help? Say yes or no, or press 1 for yes and 2 for no."
    another: str = "Good. Do you have another question? If not, just say no."
    ticket: str = ("I have opened a ticket for you, and an engineer will get back to you. "
                   "Your ticket number is")
    ticket_failed: str = ("Sorry, I could not take down your request. "
                          "Please call again a little later.")
    message: str = ("Please tell us about your problem after the tone, and press the "
                    "pound key or hang up when you are done.")
    """Before a ticket, on channels that record (Twilio): the caller's message, transcribed
    into the ticket."""
    message_s: int = Field(60, ge=5, le=600)
    """The longest message recorded."""
    questions: int = Field(3, ge=1, le=50)
    """Questions answered in one call before the bot says goodbye."""
    retries: int = Field(2, ge=0, le=5)
    """Reprompts after silence before giving up."""
    person: str | None = None
    """A forward node, for callers who ask for a person (or press 0)."""
    next: str | None = None

    def prompts(self) -> Iterator[str | Path]:
        yield from super().prompts()
        yield from (self.reprompt, self.ask, self.rephrase, self.clarify, self.choose,
                    self.confirm, self.yes_no, self.help_check, self.another, self.ticket,
                    self.ticket_failed, self.message)


class GotoNode(_Node):
    type: Literal["goto"]
    next: str


class HangupNode(Spoken):
    type: Literal["hangup"]


Node = Annotated[SayNode | MenuNode | HoursNode | ForwardNode | VoicebotNode | GotoNode
                 | HangupNode,
                 Field(discriminator="type")]


class VoiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["piper", "espeak"] = "piper"
    options: dict[str, str] = {}


class Flow(BaseModel):
    """The whole of ``ivr.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str
    voice: VoiceSettings = VoiceSettings()
    nodes: dict[str, Node] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Flow:
        problems = [] if self.start in self.nodes else [f"start: no node named {self.start!r}"]
        for name, node in self.nodes.items():
            problems += [f"nodes.{name}.{field}: no node named {target!r}"
                         for field, target in node.targets() if target not in self.nodes]
            if (isinstance(node, VoicebotNode) and node.person is not None
                    and not isinstance(self.nodes.get(node.person), ForwardNode | None)):
                problems.append(f"nodes.{name}.person: {node.person!r} is not a forward node")
            if isinstance(node, Spoken) and node.file is not None and not node.file.is_file():
                problems.append(f"nodes.{name}.file: no such file {str(node.file)!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def prompts(self) -> tuple[list[str], list[Path]]:
        """Every text and file the flow can play, to prepare at start-up."""
        texts: list[str] = []
        files: list[Path] = []
        for node in self.nodes.values():
            if isinstance(node, Spoken):
                for prompt in node.prompts():
                    if isinstance(prompt, Path):
                        files.append(prompt)
                    else:
                        texts.append(prompt)
        return texts, files

    @property
    def forwards(self) -> bool:
        """Whether any node forwards calls (and so needs the on-call roster)."""
        return any(isinstance(node, ForwardNode) for node in self.nodes.values())

    @property
    def voicebots(self) -> bool:
        """Whether any node is a voice bot (and so needs speech recognition, the FAQ
        search and tickets)."""
        return any(isinstance(node, VoicebotNode) for node in self.nodes.values())


def load_flow(path: Path, environ: Mapping[str, str] | None = None) -> Flow:
    """Load and check a flow; prompt files are relative to the flow file."""
    return load_yaml(path, Flow, environ, context={"base": path.parent})


def _days(spec: str) -> list[str]:
    parts = spec.lower().split("-")
    if not all(p in DAYS for p in parts) or len(parts) > 2:
        raise ValueError(f"expected a day or range such as mon or mon-fri, got {spec!r}")
    first, last = DAYS.index(parts[0]), DAYS.index(parts[-1])
    return list(DAYS[first:last + 1]) if first <= last else [*DAYS[first:], *DAYS[:last + 1]]


def _span(text: str) -> tuple[datetime.time, datetime.time]:
    match = _SPAN.match(text.strip())
    if match is None:
        raise ValueError(f"expected opening hours such as 09:00-18:00, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60) or (h1, m1) >= (h2, m2):
        raise ValueError(f"{text!r} is not a valid span within one day")
    end = datetime.time(23, 59, 59, 999999) if h2 == 24 else datetime.time(h2, m2)
    return datetime.time(h1, m1), end


__all__ = ["Flow", "ForwardNode", "GotoNode", "HangupNode", "HoursNode", "MenuNode", "Node",
           "SayNode", "VoicebotNode", "load_flow"]
