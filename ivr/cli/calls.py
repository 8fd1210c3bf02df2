"""`hotline calls ...`: what happened on recent calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from ivr.cli.common import (
    BadUsage,
    CliError,
    config_option,
    json_option,
    load,
    local_time,
    print_json,
    print_table,
    redis_client,
)
from ivr.operations import iso
from ivr.quality import rate
from ivr.records import CallRecord, CallStore

LIST_LIMIT = 20
T = TypeVar("T")


@click.group()
def calls() -> None:
    """See call records."""


@calls.command("list")
@click.option("--limit", default=LIST_LIMIT, show_default=True, type=click.IntRange(1))
@config_option
@json_option
def list_calls(limit: int, config: str | None, as_json: bool) -> None:
    """Show the most recent calls, newest first."""
    records = _store(config, lambda store: store.recent(limit))
    if as_json:
        print_json([_as_json(r) for r in records])
        return
    print_table(["ID", "STARTED", "TRUNK", "CALLER", "SECONDS", "OUTCOME", "PATH"],
                [[r.id[:12], local_time(r.started_at), r.trunk, r.caller, _seconds(r),
                  r.outcome or ("in progress" if r.ended_at is None else "-"),
                  " > ".join(r.path)] for r in records])


@calls.command("show")
@click.argument("call_id")
@config_option
@json_option
def show_call(call_id: str, config: str | None, as_json: bool) -> None:
    """Show one call in full; CALL_ID may be the first characters shown by `calls list`."""
    record = _store(config, lambda store: _find(store, call_id))
    if as_json:
        print_json(_as_json(record))
        return
    data = _as_json(record)
    attempts = data.pop("forward_attempts")
    transcript, searches = data.pop("transcript"), data.pop("bot_turns")
    routing, moves = data.pop("routing"), data.pop("moved")
    data.pop("quality")
    for key, value in data.items():
        shown = " > ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':<14}{'-' if shown in (None, '') else shown}")
    click.echo("moved:" + ("        -" if not moves else ""))
    for move in moves:  # taken up by another node when its node died
        click.echo(f"  from {move['from']} to {move['to']} at {local_time(move['at'])}, "
                   f"both legs re-INVITEd in {move['reinvite_s']:g} s")
    click.echo("forwarding:" + ("   -" if not attempts else ""))
    for attempt in attempts:
        reason = f" ({attempt['reason']})" if attempt["reason"] else ""
        click.echo(f"  {attempt['person']} via {attempt['trunk']}: {attempt['outcome']}{reason}")
    if routing:
        click.echo("trunks passed over:")
    for trunk, why in sorted(routing.items()):
        click.echo(f"  {trunk}: {why}")
    for line in _quality_lines(record):
        click.echo(line)
    if searches:
        click.echo("FAQ searches:")
    for search in searches:
        found = search["id"] or f"{search['decision']} (best: {search['candidates'][0]})"
        helped = {True: ", helped", False: ", did not help"}.get(search.get("helped"), "")
        click.echo(f"  \"{search['text']}\" -> {found}, confidence {search['confidence']:.2f}, "
                   f"{search['elapsed_ms']:.0f} ms{helped}")
    if transcript:
        click.echo("transcript:")
    start = record.answered_at or record.started_at
    for turn in transcript:
        click.echo(f"  {turn['at'] - start:6.1f} s  {turn['speaker']:<6}  {turn['text']}")


def _quality_lines(record: CallRecord) -> list[str]:
    """How the call sounded: the caller's leg, then each answered forward's."""
    legs = [("caller", record.trunk, record.quality)]
    legs += [(a["person"], a["trunk"], a["quality"]) for a in record.forward_attempts
             if a.get("quality")]
    if record.quality is None and len(legs) == 1:
        return ["quality:      not measured"]
    lines = ["quality:"]
    for leg, trunk, quality in legs:
        if quality is None:
            lines.append(f"  {leg} via {trunk}: not measured")
            continue
        mos = quality["mos"]
        lines.append(f"  {leg} via {trunk}: MOS " +
                     ("- (no audio measured)" if mos is None else f"{mos:.2f} ({rate(mos)})"))
        lines += [f"    {name + ':':<10}{text}" for name, text in _directions(quality)]
    return lines


def _directions(quality: dict[str, Any]) -> list[tuple[str, str]]:
    """Loss and jitter each way, and the round-trip time, of one leg's figures."""
    no_rtcp = "no RTCP from the peer"
    received = "no audio from the peer" if quality["received_packets"] is None else (
        f"{quality['received_loss_percent']:.2f} % lost ({quality['received_lost']} of "
        f"{quality['received_packets']} packets), jitter {quality['received_jitter_ms']:.1f} ms")
    sent = no_rtcp if quality["sent_loss_percent"] is None else (
        f"{quality['sent_loss_percent']:.2f} % lost, jitter {quality['sent_jitter_ms']:.1f} "
        f"ms (the peer's latest of {quality['reports_received']} RTCP reports)")
    rtt = no_rtcp if not quality["reports_received"] else (
        "not measured (the peer's reports answer none of ours)" if quality["rtt_ms"] is None
        else f"{quality['rtt_ms']:.1f} ms")
    return [("received", received), ("sent", sent), ("RTT", rtt)]


def _store(config: str | None, read: Callable[[CallStore], T]) -> T:
    settings = load(config)
    store = CallStore(redis_client(settings), settings.redis.prefix)
    try:
        return read(store)
    except redis.RedisError as exc:
        raise CliError(f"Redis failed while reading calls: {exc}") from exc


def _find(store: CallStore, call_id: str) -> CallRecord:
    record = store.get(call_id)
    if record is not None:
        return record
    matches = [r for r in store.recent(1000) if r.id.startswith(call_id)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BadUsage(f"{call_id!r} matches {len(matches)} calls; give more characters")
    raise BadUsage(f"no call {call_id!r} among the last 1000")


def _as_json(record: CallRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    for key in ("started_at", "answered_at", "ended_at"):
        data[key] = iso(data[key])
    return data


def _seconds(record: CallRecord) -> str:
    if record.answered_at is None or record.ended_at is None:
        return "-"
    return f"{record.ended_at - record.answered_at:.0f}"
