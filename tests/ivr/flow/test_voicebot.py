"""The voice bot's conversation, with a scripted caller: the real FAQ search over the
example FAQ, a real ticket desk on Redis, and the example flow's `assistant` node.
(Speech in and out through real calls: tests/ivr/test_voicebot_calls.py.)"""

from __future__ import annotations

import pytest
import redis

from ivr.channels.base import Heard
from ivr.flow.model import VoicebotNode, load_flow
from ivr.flow.voicebot import VoiceBot, asks_for_person, choice, yes_or_no
from ivr.records import CallRecord
from ivr.tickets.store import TicketStore
from speech.errors import RecognizerError
from tests.ivr.conftest import EXAMPLE_FLOW
from tests.ivr.flow.test_runner import ScriptedChannel

NODE = load_flow(EXAMPLE_FLOW).nodes["assistant"]
assert isinstance(NODE, VoicebotNode)
OIL_CHANGE = "how many hours between oil changes"


def converse(bot: VoiceBot, *heard: Heard | str | Exception,
             path: tuple[str, ...] = ("assistant",)) -> tuple[str | None, CallRecord,
                                                                ScriptedChannel]:
    channel = ScriptedChannel([], heard=[Heard(text=h) if isinstance(h, str) else h
                                         for h in heard])
    record = CallRecord("call-1", "carrier-a", "13900000000", "400", 0.0, path=list(path))
    return bot.run(NODE, channel, record), record, channel


def said(record: CallRecord, speaker: str) -> list[str]:
    return [t["text"] for t in record.transcript if t["speaker"] == speaker]


def test_an_answer_that_helped(voicebot: VoiceBot, redis_client: redis.Redis) -> None:
    next_node, record, channel = converse(voicebot, OIL_CHANGE, "yes thanks", "no that's all")
    assert next_node == "goodbye" and record.outcome == "bot: answered"
    [turn] = record.bot_turns
    assert turn["decision"] == "answer" and turn["id"] == "service-interval" and turn["helped"]
    answer = voicebot.searcher.faq.entry("service-interval").answer
    assert said(record, "caller") == [OIL_CHANGE, "yes thanks", "no that's all"]
    greeting, answer_turn, another = said(record, "bot")
    assert (greeting, another) == (NODE.text, NODE.another)
    assert answer_turn == f"{answer} {NODE.help_check}"
    assert record.ticket is None and not TicketStore(redis_client).tickets()
    assert not channel.heard, "every scripted answer was asked for"


def test_an_answer_that_did_not_help_gives_a_ticket(voicebot: VoiceBot,
                                                    redis_client: redis.Redis) -> None:
    next_node, record, _ = converse(voicebot, OIL_CHANGE, Heard(digit="2"))
    assert next_node == "goodbye" and record.outcome == "bot: ticket"
    assert record.bot_turns[0]["helped"] is False
    ticket = TicketStore(redis_client).get(record.ticket or "")
    assert ticket.reason == "the answer did not help"
    assert (ticket.caller, ticket.call_id, ticket.trunk) == ("13900000000", "call-1",
                                                             "carrier-a")
    assert [(t.speaker, t.text) for t in ticket.transcript][1::2] == [
        ("caller", OIL_CHANGE), ("caller", "[key 2]")]
    assert len(ticket.transcript) == 4, "the ticket's own announcement comes after it"
    assert ticket.candidates[0].faq_id == "service-interval"
    assert ticket.category == "maintenance"
    digits = " ".join(record.ticket.replace("-", ""))  # type: ignore[union-attr]
    assert said(record, "bot")[-1].replace(",", "").endswith(f"{digits}.")


def test_no_verdict_on_the_answer_after_the_retries_gives_a_ticket(
        voicebot: VoiceBot, redis_client: redis.Redis) -> None:
    _, record, channel = converse(voicebot, OIL_CHANGE, "hmm", Heard(), "what about the filter")
    assert record.outcome == "bot: ticket" and not channel.heard
    assert said(record, "bot")[2:4] == [NODE.help_check, NODE.help_check]
    ticket = TicketStore(redis_client).get(record.ticket or "")
    assert ticket.reason == "the caller did not say whether the answer helped"
    assert ticket.candidates[0].faq_id == "service-interval"


def test_no_answer_twice_gives_a_ticket_with_the_candidates(voicebot: VoiceBot,
                                                           redis_client: redis.Redis) -> None:
    next_node, record, _ = converse(voicebot, "what will the weather be like in paris tomorrow",
                                    "is it going to rain this weekend")
    assert next_node == "goodbye" and record.outcome == "bot: ticket"
    assert [t["decision"] for t in record.bot_turns] == ["none", "none"]
    ticket = TicketStore(redis_client).get(record.ticket or "")
    assert ticket.reason == "no confident answer"
    assert len(ticket.candidates) == 3
    assert [t.text for t in ticket.transcript if t.speaker == "caller"] == [
        "what will the weather be like in paris tomorrow", "is it going to rain this weekend"]


def test_silence_after_a_rephrase_request_still_gives_a_ticket(voicebot: VoiceBot) -> None:
    _, record, channel = converse(voicebot, "what will the weather be like in paris tomorrow",
                                  Heard())
    assert record.outcome == "bot: ticket" and record.ticket is not None
    assert not channel.heard


def test_a_caller_who_never_speaks_gets_no_ticket(voicebot: VoiceBot) -> None:
    next_node, record, channel = converse(voicebot, Heard(), Heard(), Heard())
    assert next_node == "goodbye" and record.outcome == "bot: no question"
    assert record.ticket is None and not channel.heard
    assert len(channel.played) == 3, "greeting and two reprompts"


def test_a_recognizer_failure_still_gives_the_caller_a_ticket(
        voicebot: VoiceBot, redis_client: redis.Redis) -> None:
    next_node, record, _ = converse(voicebot, OIL_CHANGE, RecognizerError("decoder crashed"))
    assert next_node == "goodbye" and record.outcome == "bot: ticket"
    ticket = TicketStore(redis_client).get(record.ticket or "")
    assert ticket.reason == "speech recognition failed: decoder crashed"
    assert [t.text for t in ticket.transcript if t.speaker == "caller"] == [OIL_CHANGE]


def test_asking_for_a_person_forwards_once_then_opens_a_ticket(voicebot: VoiceBot) -> None:
    next_node, record, _ = converse(voicebot, "can i talk to an engineer please")
    assert next_node == "support" and record.ticket is None
    next_node, record, _ = converse(voicebot, Heard(digit="0"),
                                    path=("main_menu", "support", "nobody_free", "assistant"))
    assert next_node == "goodbye" and record.ticket is not None
    assert record.outcome == "bot: ticket"


def test_questions_per_call_are_limited(voicebot: VoiceBot) -> None:
    answers = [OIL_CHANGE, "yes", "my invoice is missing", "yes",
               "the compressor is making a horrible rattling noise", "yes"]
    next_node, record, channel = converse(voicebot, *answers)
    assert next_node == "goodbye" and record.outcome == "bot: answered"
    assert [t["id"] for t in record.bot_turns] == ["service-interval", "invoice",
                                                   "noise-vibration"]
    assert not channel.heard


def test_two_close_candidates_the_caller_chooses(voicebot: VoiceBot) -> None:
    next_node, record, _ = converse(voicebot, "the oil alarm", "the second one", "yes",
                                    "no thanks")
    assert record.outcome == "bot: answered" and next_node == "goodbye"
    [turn] = record.bot_turns
    assert turn["decision"] == "answer" and turn["clarified"] and turn["helped"]
    assert turn["id"] == "fault-f03-oil-level"
    asked = said(record, "bot")[1]
    assert asked == ("Did you mean: How often does the compressor need a service, or The "
                     "display shows F03? Say or press 1 for the first, 2 for the second.")


def test_a_fairly_sure_guess_is_confirmed_before_it_is_answered(voicebot: VoiceBot) -> None:
    question = "the compressor came today and the panel on the side is all bent"
    assert voicebot.searcher.ask(question).decision == "none", "below the answer threshold"
    _, record, _ = converse(voicebot, question, "yes", "yes", "no")
    [turn] = record.bot_turns
    assert (turn["id"], turn["confirmed"], turn["helped"]) == ("damaged-delivery", True, True)
    assert said(record, "bot")[1].startswith("Is your question about this: ")

    _, record, _ = converse(voicebot, question, "no", Heard())
    assert record.outcome == "bot: ticket" and record.bot_turns[0]["decision"] == "none"


@pytest.mark.parametrize(("text", "expected"), [
    ("can i talk to an engineer please", True), ("agent", True), ("a real person", True),
    ("put me through to someone", True), ("i want to speak to a human", True),
    ("we need someone to come out and look at the machine", False),
    ("the engineer who visited left the panel open", False),
])
def test_requests_for_a_person(text: str, expected: bool) -> None:
    assert asks_for_person(text) is expected


@pytest.mark.parametrize(("heard", "expected"), [
    (Heard(text="yes"), True), (Heard(text="yeah it did thanks"), True),
    (Heard(text="no"), False), (Heard(text="not really"), False),
    (Heard(text="no thank you"), False), (Heard(text="yes thanks"), True),
    (Heard(text="it didn't work"), False), (Heard(text="what about the oil"), None),
    (Heard(digit="1"), True), (Heard(digit="2"), False), (Heard(digit="5"), None),
    (Heard(), None),
])
def test_yes_or_no(heard: Heard, expected: bool | None) -> None:
    assert yes_or_no(heard) is expected


@pytest.mark.parametrize(("heard", "expected"), [
    (Heard(text="the first one"), 0), (Heard(text="number two"), 1), (Heard(digit="2"), 1),
    (Heard(text="hmm"), None), (Heard(digit="7"), None),
])
def test_choice_between_two(heard: Heard, expected: int | None) -> None:
    assert choice(heard) == expected
