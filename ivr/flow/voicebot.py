"""The voice assistant of a `voicebot` node: a conversation over the FAQ, ending in
an answer that helped, a person, or a ticket.

One `VoiceBot` serves every call; each call gets its own `Conversation`, with its
own recognizer, transcript and counters. The conversation goes:

    greeting ─► question ─► search ─┬─ answer ─► "did that help?" ─┬─ yes ─► another? ─► next
        ▲  (silence: reprompt)      │                              └─ no ──► ticket ──► next
        │                           ├─ clarify: "did you mean 1 or 2?" ─► answer, or none
        │                           ├─ none, fairly sure: "is it about X?" ─► answer, or none
        └───────── rephrase ◄───────┴─ none (once; the second time a ticket)

The search's decision threshold keeps wrong answers rare, so some right entries fall
just below it; between `confirm_above` and that threshold the bot asks the caller
to confirm its best guess rather than saying it has no answer.

At any question a request for a person (in words, or the 0 key) goes to the
node's `person` forward, unless the call has been there already or nobody is on
the roster; then the caller gets a ticket instead. Everything the caller and the
bot said goes into the call record and into any ticket.

Every prompt, and every FAQ answer, is synthesized once at start-up (`warm`), so a
turn costs recognition and a search, never synthesis; the ticket number is spoken
from cached digits.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ivr.channels.base import Heard
from ivr.clock import Now, utc_now
from ivr.flow.model import VoicebotNode
from ivr.flow.oncall import OnCall
from ivr.records import CallRecord
from ivr.tickets import TicketDesk
from ivr.tickets.errors import TicketNotSaved
from ivr.tickets.ids import spoken_ticket_id
from ivr.tickets.model import Candidate, Priority, Turn
from kb.faq import Entry
from kb.search import Decision, Result, Searcher
from speech.errors import RecognizerError
from speech.prompts import TELEPHONE_RATE, PromptCache, trimmed
from speech.recognizer import Recognizer
from speech.synthesizer import Samples

logger = logging.getLogger(__name__)

PAUSE_S = 0.25
"""Silence between the pieces of a composed prompt."""
DIGIT_PAUSE_S = 0.1
"""Silence between the digits of a ticket number, each trimmed of the synthesizer's
own lead-in and tail: one second per digit sounds like a list, not a number."""
PERSON_KEY = "0"
YES_KEYS, NO_KEYS = "1", "2"

_YES = re.compile(r"\b(yes|yeah|yep|yup|sure|correct|it did|that helped|helped|thanks?|"
                  r"thank you|great|perfect|ok|okay)\b")
_NO = re.compile(r"\b(no|nope|nah|not really|it didn'?t|did not|didn'?t|doesn'?t|"
                 r"does not|not at all)\b")
_PERSON = re.compile(r"\b(person|human|agent|operator|engineer|technician|somebody|someone|"
                     r"representative|staff)\b")
_PERSON_VERB = re.compile(r"\b(talk|speak|connect|transfer|put me through|real person|"
                          r"human being)\b")
_FIRST = re.compile(r"\b(one|first|1|former)\b")
_SECOND = re.compile(r"\b(two|second|2|latter|to|too)\b")


class Listener(Protocol):
    """What the bot needs from a call (`ivr.channels.base.Channel` provides it)."""

    def ask(self, samples: Samples | None, recognizer: Recognizer) -> Heard:
        """Play `samples` (if any), letting the caller interrupt by speaking or with a
        key, then listen for one turn; the caller's words, key, or nothing."""

    def play(self, samples: Samples, barge_in: bool) -> str | None:
        """Play to the end (see `Channel.play`)."""

    def leave_message(self, samples: Samples, recognizer: Recognizer,
                      max_s: int) -> str | None:
        """Record and transcribe the caller's message, or None (see
        `Channel.leave_message`)."""


def asks_for_person(text: str) -> bool:
    """Whether a turn asks to speak to a person: "can I talk to an engineer", "agent",
    but not "we need someone to come and look at the machine"."""
    lowered = text.lower()
    if not _PERSON.search(lowered):
        return False
    return len(lowered.split()) <= 3 or bool(_PERSON_VERB.search(lowered))


def yes_or_no(heard: Heard) -> bool | None:
    """True for yes (or the 1 key), False for no (or 2), None when neither."""
    if heard.digit is not None:
        return {YES_KEYS: True, NO_KEYS: False}.get(heard.digit)
    which = _earliest(heard.text, _YES, _NO)
    return None if which is None else which == 0


def choice(heard: Heard) -> int | None:
    """0 or 1 for the first or second of two candidates, None when unclear."""
    if heard.digit is not None:
        return {"1": 0, "2": 1}.get(heard.digit)
    return _earliest(heard.text, _FIRST, _SECOND)


def _earliest(text: str, first: re.Pattern[str], second: re.Pattern[str]) -> int | None:
    """0 or 1 for whichever pattern matches earlier in `text` (the first word decides:
    "the second one", "no thank you"), None if neither does."""
    lowered = text.lower()
    found = [(m.start(), n) for n, p in enumerate((first, second)) if (m := p.search(lowered))]
    return min(found)[1] if found else None


class VoiceBot:
    """The services behind every `voicebot` node: the FAQ search, the recognizer for
    each call, the ticket desk and the roster."""

    def __init__(self, searcher: Searcher, recognizers: Callable[[], Recognizer],
                 desk: TicketDesk, prompts: PromptCache, oncall: OnCall | None = None,
                 now: Now = utc_now,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.searcher = searcher
        self.recognizers = recognizers
        self.desk = desk
        self.prompts = prompts
        self.oncall = oncall
        self.now = now
        self.wallclock = wallclock

    def warm(self) -> None:
        """Synthesize every answer, entry label and digit now, not during a call (the
        nodes' own sentences are warmed with the rest of the flow's prompts)."""
        texts = [text for e in self.searcher.faq.entries for text in (e.answer, _label(e))]
        self.prompts.warm([*texts, "or", *"0123456789"], [])

    def run(self, node: VoicebotNode, channel: Listener, record: CallRecord) -> str | None:
        """Hold the conversation; return the node to go to next."""
        recognizer = self.recognizers()
        conversation = Conversation(self, node, channel, recognizer, record)
        try:
            return conversation.run()
        except RecognizerError as exc:  # the caller still gets a ticket and its number
            logger.error("Call %s: speech recognition failed: %s", record.id, exc)
            return conversation.ticket(f"speech recognition failed: {exc}")
        finally:
            recognizer.close()


@dataclass
class Conversation:
    bot: VoiceBot
    node: VoicebotNode
    channel: Listener
    recognizer: Recognizer
    record: CallRecord
    answered: int = 0
    turns: list[Turn] = field(default_factory=list)
    last: Result | None = None
    """The latest search that did not end in a helpful answer: its candidates go
    into the ticket."""

    def run(self) -> str | None:
        node = self.node
        heard = (self._question(node.text) if node.text else
                 self._question(f"[{node.file}]", self.bot.prompts.file(node.file))
                 if node.file else self._question(None))
        rephrased = False
        while True:
            if heard.nothing:
                return self._finish("no question")
            if heard.digit == PERSON_KEY or (heard.text and asks_for_person(heard.text)):
                return self._person()
            if heard.digit is not None:  # any other key at a question: ask again
                heard = self._question(self.node.ask)
                continue
            result = self._search(heard.text)
            if result.decision is Decision.CLARIFY:
                result = self._clarify(result)
            elif (result.decision is Decision.NONE
                  and result.confidence >= self.node.confirm_above):
                result = self._confirm(result)
            if result.decision is Decision.ANSWER:
                helped = self._answer(result)
                if helped is None:
                    return self.ticket("the caller did not say whether the answer helped")
                if not helped:
                    return self.ticket("the answer did not help")
                self.answered += 1
                if self.answered >= self.node.questions:
                    return self._finish("answered")
                heard, rephrased = self._listen(self.node.another), False
                verdict = yes_or_no(heard)
                if verdict is False or heard.nothing:
                    return self._finish("answered")
                if verdict and len(heard.text.split()) <= 3:  # "yes": the question comes next
                    heard = self._question(self.node.ask)
                continue
            if rephrased:
                return self.ticket("no confident answer")
            heard, rephrased = self._listen(self.node.rephrase), True
            if heard.nothing:
                return self.ticket("no confident answer")

    # -- turns

    def _question(self, text: str | None, audio: Samples | None = None) -> Heard:
        """Ask for a question, reprompting after silence up to `retries` times."""
        heard = self._listen(text, audio)
        for _ in range(self.node.retries):
            if not heard.nothing:
                break
            heard = self._listen(self.node.reprompt)
        return heard

    def _answer(self, result: Result) -> bool | None:
        """Speak the answer and ask whether it helped; None if the caller never said."""
        assert result.answer is not None
        heard = self._listen(f"{result.answer} {self.node.help_check}",
                             self._join(self._text(result.answer),
                                        self._text(self.node.help_check)))
        verdict = yes_or_no(heard)
        for _ in range(self.node.retries):
            if verdict is not None:
                break
            verdict = yes_or_no(self._listen(self.node.help_check))
        if verdict is not None:
            self.record.judge_search(verdict)
        if not verdict:
            self.last = result
        return verdict

    def _clarify(self, result: Result) -> Result:
        """Ask which of the two best entries the caller means; the result for that one,
        or `none` when the caller does not choose."""
        faq = self.bot.searcher.faq
        first, second = (faq.entry(c.id) for c in result.candidates[:2])
        label = f"{self.node.clarify}: {_label(first)}, or {_label(second)}? {self.node.choose}"
        heard = self._listen(label, self._join(
            self._text(self.node.clarify), self._text(_label(first)), self._text("or"),
            self._text(_label(second)), self._text(self.node.choose)))
        picked = choice(heard)
        if picked is None:
            self.last = result
            return Result(Decision.NONE, None, result.score, result.confidence, None,
                          result.candidates, result.text)
        entry = (first, second)[picked]
        chosen = Result(Decision.ANSWER, entry.id, result.candidates[picked].score,
                        result.confidence, entry.answer, result.candidates, result.text)
        self.record.settle_search(entry.id, "clarified")
        return chosen

    def _confirm(self, result: Result) -> Result:
        """Ask whether the best entry, not quite confident enough to answer, is what the
        caller means; the answer if they say yes, else the result as it was."""
        entry = self.bot.searcher.faq.entry(result.candidates[0].id)
        label = f"{self.node.confirm}: {_label(entry)}? {self.node.yes_no}"
        heard = self._listen(label, self._join(self._text(self.node.confirm),
                                               self._text(_label(entry)),
                                               self._text(self.node.yes_no)))
        if yes_or_no(heard) is not True:
            return result
        self.record.settle_search(entry.id, "confirmed")
        return Result(Decision.ANSWER, entry.id, result.score, result.confidence, entry.answer,
                      result.candidates, result.text)

    def _listen(self, text: str | None, audio: Samples | None = None) -> Heard:
        """Say `text` (as `audio`, if given: a composed prompt or a file) and hear the
        caller's answer; both go into the transcript."""
        if text is not None:
            self._turn("bot", text)
            audio = self._text(text) if audio is None else audio
        heard = self.channel.ask(audio, self.recognizer)
        if heard.text.strip():
            self._turn("caller", heard.text.strip())
        elif heard.digit is not None:
            self._turn("caller", f"[key {heard.digit}]")
        return heard

    def _search(self, text: str) -> Result:
        result = self.bot.searcher.ask(text)
        self.record.add_search(text, str(result.decision), result.id, result.confidence,
                               result.elapsed_ms, [c.id for c in result.candidates[:3]])
        if result.decision is not Decision.ANSWER:
            self.last = result
        logger.info("Call %s: %r -> %s %s (confidence %.2f)", self.record.id, text,
                    result.decision, result.id or result.candidates[0].id, result.confidence)
        return result

    # -- endings

    def _person(self) -> str | None:
        person = self.node.person
        if (person is not None and self.bot.oncall is not None
                and person not in self.record.path
                and self.bot.oncall.roster(self.bot.now())):
            self.record.outcome = None
            return person
        return self.ticket("the caller asked for a person; nobody could be reached")

    def ticket(self, reason: str) -> str | None:
        """Take the caller's message where the channel records one, open a ticket with
        everything heard, and read its number out."""
        self._message()
        faq = self.bot.searcher.faq
        considered = [] if self.last is None else self.last.candidates[:3]
        candidates = [Candidate(c.id, e.questions[0], round(c.score, 4), e.category,
                                Priority(e.priority))
                      for c, e in ((c, faq.entry(c.id)) for c in considered)]
        record = self.record
        try:
            ticket = self.bot.desk.open(caller=record.caller, call_id=record.id,
                                        trunk=record.trunk, reason=reason,
                                        transcript=self.turns, candidates=candidates)
        except TicketNotSaved:
            self._say(self.node.ticket_failed)
            return self._finish("ticket not saved")
        record.ticket = ticket.id
        self._say(self.node.ticket, ticket.id)
        return self._finish("ticket")

    def _message(self) -> None:
        try:
            message = self.channel.leave_message(self._text(self.node.message),
                                                 self.recognizer, self.node.message_s)
        except RecognizerError as exc:
            message = f"[not transcribed: {exc}]"
        if message is not None:
            self._turn("bot", self.node.message)
            self._turn("caller", f"[message] {message}" if message.strip()
                       else "[message: no words recognized]")

    def _finish(self, outcome: str) -> str | None:
        self.record.outcome = f"bot: {outcome}"
        return self.node.next

    def _say(self, text: str, ticket_id: str | None = None) -> None:
        pieces = [self._text(text)]
        said = text
        if ticket_id is not None:
            spoken = spoken_ticket_id(ticket_id)
            said = f"{text} {spoken}."
            for group in spoken.split(", "):
                pieces.append(self._join(*(trimmed(self._text(d)) for d in group.split()),
                                         pause_s=DIGIT_PAUSE_S))
        self._turn("bot", said)
        self.channel.play(self._join(*pieces), barge_in=False)

    # -- helpers

    def _turn(self, speaker: str, text: str) -> None:
        turn = Turn(speaker, text, self.bot.wallclock())
        self.turns.append(turn)
        self.record.add_turn(speaker, text, turn.at)

    def _text(self, text: str) -> Samples:
        return self.bot.prompts.text(text)

    def _join(self, *pieces: Samples, pause_s: float = PAUSE_S) -> Samples:
        pause = np.zeros(int(pause_s * TELEPHONE_RATE), dtype=np.int16)
        parts: list[Samples] = []
        for piece in pieces:
            parts += [piece, pause]
        return np.concatenate(parts[:-1]) if parts else pause


def _label(entry: Entry) -> str:
    """How the bot names an FAQ entry: its first question, without the final stop."""
    return entry.questions[0].rstrip(" .?!")


__all__ = ["Conversation", "Heard", "Listener", "VoiceBot", "asks_for_person", "choice",
           "yes_or_no"]
