"""Tickets without peers: ids, the JSON form, status changes, priority, settings, backoff."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from ivr.tickets.config import HelpdeskSettings, SlaHours, TicketSettings
from ivr.tickets.errors import InvalidTransition
from ivr.tickets.helpdesk import payload, retry_after_s
from ivr.tickets.ids import new_uid, parse_ticket_id, spoken_ticket_id, ticket_id
from ivr.tickets.model import Candidate, Priority, Ticket, TicketStatus, Turn
from ivr.tickets.outbox import retry_delay
from ivr.tickets.priority import decide_priority, sla_due
from ivr.tickets.spool import parse_spool


def make_ticket(**changes: object) -> Ticket:
    uid = new_uid()
    values: dict[str, object] = dict(
        id=ticket_id(uid), uid=uid, created_at=1_700_000_000.0, caller="+8613800000000",
        call_id="call-1", trunk="carrier-a", reason="no confident answer", category="printers",
        priority=Priority.P3, priority_reasons=("default priority P3",),
        sla_due_at=1_700_086_400.0,
        transcript=(Turn("bot", "How can I help?", 1_700_000_000.5),
                    Turn("caller", "The printer shows error E42")),
        candidates=(Candidate("printer-e42", "What does E42 mean?", 0.61, "printers",
                              Priority.P3),))
    values.update(changes)
    return Ticket(**values)  # type: ignore[arg-type]


# Ids


def test_ticket_ids_are_eight_digits_grouped_and_derived_from_the_uid() -> None:
    uid = new_uid()
    first = ticket_id(uid)
    assert len(first) == 9 and first[4] == "-" and first.replace("-", "").isdigit()
    assert first[0] != "0"
    assert ticket_id(uid) == first
    assert ticket_id(uid, 1) != first
    assert len({ticket_id(new_uid()) for _ in range(2000)}) > 1990


@pytest.mark.parametrize("typed", ["4729-1830", "47291830", " 4729 1830 ", "4729.1830"])
def test_typed_ids_are_normalised(typed: str) -> None:
    assert parse_ticket_id(typed) == "4729-1830"


FULLWIDTH_DIGITS = "".join(chr(0xFF10 + int(d)) for d in "47291830")


@pytest.mark.parametrize("typed", ["", "4729-183", "4729-18301", "ABCD-EFGH", FULLWIDTH_DIGITS])
def test_bad_ids_are_refused_with_an_example(typed: str) -> None:
    with pytest.raises(ValueError, match="expected 8 digits such as 4729-1830"):
        parse_ticket_id(typed)


def test_spoken_id_is_read_digit_by_digit_with_a_pause() -> None:
    assert spoken_ticket_id("4729-1830") == "4 7 2 9, 1 8 3 0"


# The JSON form and status


def test_ticket_round_trips_through_json() -> None:
    ticket = make_ticket(acked_at=5.0, status=TicketStatus.ACKED, previous_id="1234-5678")
    again = Ticket.from_json(ticket.to_json())
    assert again == ticket
    assert isinstance(again.transcript[0], Turn) and isinstance(again.priority, Priority)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("caller"), "ticket has no caller"),
    (lambda d: d.update(priority="P9"), "expected P1, P2, P3 or P4, got 'P9'"),
    (lambda d: d.update(status="closed"), "unknown value 'closed'"),
    (lambda d: d.update(created_at="yesterday"), "created_at: expected a number"),
    (lambda d: d.update(transcript=[{"speaker": "caller"}]), "missing ['text']"),
    (lambda d: d.update(candidates=[7]), "candidates: expected objects"),
    (lambda d: d.update(colour="red"), "unknown fields: colour"),
])
def test_bad_ticket_json_names_the_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = make_ticket().to_dict()
    change(data)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Ticket.from_json(json.dumps(data))


def test_non_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        Ticket.from_json('{"id": "12')
    with pytest.raises(ValueError, match="must be a JSON object"):
        Ticket.from_json("[]")


def test_status_moves_forward_only() -> None:
    ticket = make_ticket()
    acked = ticket.moved_to(TicketStatus.ACKED, 10.0)
    assert (acked.status, acked.acked_at) == (TicketStatus.ACKED, 10.0)
    resolved = acked.moved_to(TicketStatus.RESOLVED, 20.0)
    assert (resolved.status, resolved.resolved_at) == (TicketStatus.RESOLVED, 20.0)
    assert ticket.moved_to(TicketStatus.RESOLVED, 5.0).acked_at is None
    with pytest.raises(InvalidTransition, match=f"ticket {ticket.id} is already acked"):
        acked.moved_to(TicketStatus.ACKED, 11.0)
    with pytest.raises(InvalidTransition, match="is resolved; it cannot become acked"):
        resolved.moved_to(TicketStatus.ACKED, 21.0)
    with pytest.raises(InvalidTransition):
        resolved.moved_to(TicketStatus.OPEN, 21.0)


# Priority and SLA


def caller(*texts: str) -> list[Turn]:
    return [Turn("caller", text) for text in texts]


P2_CANDIDATE = Candidate("belt", "Belt slipping", 0.8, "mechanics", Priority.P2)
P4_CANDIDATE = Candidate("manual", "Where is the manual?", 0.4, "docs", Priority.P4)


def test_priority_comes_from_the_best_candidate_or_the_default() -> None:
    decision = decide_priority([P4_CANDIDATE, P2_CANDIDATE], caller("belt noise"), Priority.P3)
    assert decision.priority == Priority.P2
    assert decision.reasons == ("FAQ belt has priority P2",)
    assert decide_priority([], [], Priority.P3).priority == Priority.P3
    unprioritised = Candidate("x", "?", 0.9)
    assert decide_priority([unprioritised, P2_CANDIDATE], [], Priority.P4).priority == \
        Priority.P4


@pytest.mark.parametrize("said", [
    "our whole production line is stopped", "the line is down since this morning",
    "production halted", "the machine won't start and we stopped production",
    "everything is at a standstill", "the conveyor isn't running",
])
def test_stopped_production_raises_priority_to_at_least_p2(said: str) -> None:
    decision = decide_priority([P4_CANDIDATE], caller("hello", said), Priority.P3)
    assert decision.priority == Priority.P2
    assert "production stopped" in decision.reasons[-1]
    assert decide_priority([P2_CANDIDATE], caller(said), Priority.P3).priority == Priority.P1


@pytest.mark.parametrize("said", [
    "there is smoke coming out of the cabinet", "it caught fire", "I got an electric shock",
    "a worker was injured", "the motor is burning", "sparks from the panel", "a gas leak",
])
def test_safety_cues_make_p1(said: str) -> None:
    decision = decide_priority([P4_CANDIDATE], caller(said), Priority.P3)
    assert decision.priority == Priority.P1
    assert decision.reasons[-1].startswith("safety (")


def test_only_the_callers_words_count() -> None:
    turns = [Turn("bot", "If there is smoke or fire, leave the building."),
             *caller("no, the display is just dim")]
    assert decide_priority([P4_CANDIDATE], turns, Priority.P3).priority == Priority.P4


def test_ordinary_words_do_not_escalate() -> None:
    turns = caller("the printer stops printing after line ten", "please help, it is urgent")
    assert decide_priority([P4_CANDIDATE], turns, Priority.P3).priority == Priority.P4


def test_sla_due_from_configured_hours() -> None:
    sla = SlaHours(P1=2, P2=8, P3=24, P4=72)
    assert sla_due(1000.0, Priority.P1, sla) == 1000.0 + 2 * 3600
    assert sla_due(1000.0, Priority.P4, SlaHours()) == 1000.0 + 72 * 3600


# Settings


def test_ticket_settings_defaults_and_spool_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = TicketSettings()
    assert settings.helpdesk.url is None
    assert settings.spool_path(tmp_path) == tmp_path / "tickets" / "spool.jsonl"
    assert TicketSettings(spool="/srv/spool.jsonl").spool_path(tmp_path).as_posix() == \
        "/srv/spool.jsonl"


@pytest.mark.parametrize(("data", "message"), [
    ({"helpdesk": {"url": "ftp://desk"}}, "expected an http:// or https:// URL"),
    ({"helpdesk": {"retry_base_s": 10, "retry_max_s": 1}}, "must not be longer"),
    ({"helpdesk": {"timeout_s": 0}}, "greater than 0"),
    ({"sla_hours": {"P1": 48}}, "must not decrease from P1 to P4"),
    ({"sla_hours": {"P5": 1}}, "Extra inputs"),
    ({"default_priority": "urgent"}, "P1"),
])
def test_bad_ticket_settings_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TicketSettings.model_validate(data)


def test_empty_helpdesk_url_and_token_mean_unset() -> None:
    settings = HelpdeskSettings.model_validate({"url": "", "token": ""})
    assert settings.url is None and settings.token is None


# Spool parsing, backoff and the helpdesk body


def test_parse_spool_keeps_good_lines_around_bad_ones() -> None:
    first, second = make_ticket(), make_ticket()
    data = (first.to_json() + "\nnot json\n\n" + second.to_json() + "\n" +
            second.to_json()[:40]).encode()
    tickets, bad = parse_spool(data)
    assert tickets == [first, second]
    assert [b.number for b in bad] == [2, 5]
    assert bad[1].error.endswith("(unfinished last line)")


def test_retry_delay_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 30.0), (500, 30.0)]:
        delays = [retry_delay(attempt, 1.0, 30.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_retry_after_header() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_helpdesk_body_has_iso_times_and_no_delivery_bookkeeping() -> None:
    body = payload(make_ticket(delivery_attempts=3, delivery_error="503"))
    assert body["schema"] == 1
    assert body["created_at"] == "2023-11-14T22:13:20.000+00:00"
    assert body["transcript"][0]["at"] == "2023-11-14T22:13:20.500+00:00"
    assert body["transcript"][1]["at"] is None
    assert "delivery_attempts" not in body and "delivered_at" not in body
    json.dumps(body)
