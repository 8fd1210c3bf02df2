"""Call records: one JSON document per call in Redis, indexed by start time, saved as
the call moves by a `RecordWriter` so a live call's record shows where it is, and how
it sounds.

    {p}:call:{id}         string, JSON CallRecord; expires after RECORD_RETENTION_S
    {p}:calls             sorted set of call ids, scored by start time
    {p}:quality:{trunk}   sorted set of the latest QUALITY_KEPT measured legs the trunk
                          carried (JSON: call, leg, at and the leg's quality figures),
                          scored by the end of the call; written with the call's final
                          record, so every node's calls are in it
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

logger = logging.getLogger(__name__)

RECORD_RETENTION_S = 90 * 86400
"""How long a call record is kept."""
SAVE_WAIT_S = 2.0
"""How long the end of a call waits for its record to be stored."""
RETRY_S = 1.0
"""Pause before saving again after Redis failed."""
QUALITY_REFRESH_S = 5.0
"""How often a live call's record is saved again when its quality changed: RTCP reports
come about this often (RFC 3550's 5 s interval)."""
QUALITY_KEPT = 100
"""Measured call legs kept per trunk in its quality list."""
ANSWERED = "answered"
"""A forward attempt's outcome once the person answered (`Outcome.ANSWERED`)."""

LegQualities = tuple[dict[str, Any] | None, dict[str, Any] | None]
"""A live call's quality figures (`LegQuality.as_dict()`): the caller's leg, and the
staff leg it is bridged to (None when it is not)."""


@dataclass
class CallRecord:
    id: str
    trunk: str
    caller: str
    called: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    path: list[str] = field(default_factory=list)
    """The flow's nodes, in the order the call visited them."""
    digits: str = ""
    forwarded_to: str | None = None
    """The on-call person (their key in oncall.yaml) who took the call."""
    forward_attempts: list[dict[str, Any]] = field(default_factory=list)
    """Each call placed to a person: person, trunk, outcome, status, reason."""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    """The voice bot's conversation: speaker ("caller" or "bot"), text, at (epoch s)."""
    bot_turns: list[dict[str, Any]] = field(default_factory=list)
    """Each question the bot searched for: text, decision, id, confidence, elapsed_ms,
    candidates, and whether the answer helped."""
    ticket: str | None = None
    """The id of the ticket the bot opened."""
    outcome: str | None = None
    end_reason: str | None = None
    callback: str | None = None
    """For a call cut off: the call-back scheduled for it, or the ticket opened instead."""
    callback_of: str | None = None
    """For a call-back: the id of the call that was cut off."""
    routing: dict[str, str] = field(default_factory=dict)
    """Trunks passed over while placing this call's forwards, and why ("DOWN since
    10:02", "drained by alice: carrier maintenance", "hold-down 40 s")."""
    quality: dict[str, Any] | None = None
    """How the caller's leg sounded, both ways (`LegQuality.as_dict()`: MOS, loss,
    jitter, round-trip time, RTCP reports); None where not measured (Twilio calls). An
    answered forward attempt has its staff leg's under "quality" too."""

    def visit(self, node: str) -> None:
        """The call reached flow node `node`."""
        self.path.append(node)

    def add_forward_attempt(self, person: str, trunk: str, outcome: str,
                            status: int | str | None, reason: str | None) -> None:
        """A call placed to on-call `person` through `trunk` ended with `outcome`."""
        self.forward_attempts.append({"person": person, "trunk": trunk, "outcome": outcome,
                                      "status": status, "reason": reason})

    def note_forward_quality(self, quality: Mapping[str, Any] | None) -> None:
        """How the latest forward attempt's call sounded (None: not measured)."""
        if quality is not None and self.forward_attempts:
            self.forward_attempts[-1]["quality"] = dict(quality)

    def note_routing(self, notes: Mapping[str, str]) -> None:
        """Why trunks were passed over for a call placed now (latest reason per trunk)."""
        self.routing.update(notes)

    def add_turn(self, speaker: str, text: str, at: float | None) -> None:
        """One line of the voice bot's conversation: "caller" or "bot" said `text`."""
        self.transcript.append({"speaker": speaker, "text": text, "at": at})

    def add_search(self, text: str, decision: str, entry: str | None, confidence: float,
                   elapsed_ms: float, candidates: Sequence[str]) -> None:
        """The bot searched the FAQ for `text`: its decision, the entry, the best ids."""
        self.bot_turns.append({"text": text, "decision": decision, "id": entry,
                               "confidence": round(confidence, 3),
                               "elapsed_ms": round(elapsed_ms, 1),
                               "candidates": list(candidates)})

    def settle_search(self, entry: str, by: str) -> None:
        """The latest search ended in an answer after all, `by` "clarified" (the caller
        chose between two) or "confirmed" (the caller said yes to the best guess)."""
        self.bot_turns[-1].update(decision="answer", id=entry, **{by: True})

    def judge_search(self, helped: bool) -> None:
        """The caller said whether the latest search's answer helped."""
        self.bot_turns[-1]["helped"] = helped

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CallRecord:
        data: dict[str, Any] = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def measured_legs(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The legs of a finished record (as `dataclasses.asdict` gives it) that have a MOS,
    each with the trunk that carried it: the caller's, then each answered forward's (the
    person's key as the leg's name)."""
    legs = [(str(data["trunk"]), "caller", data.get("quality"))]
    legs += [(str(a["trunk"]), str(a["person"]), a.get("quality"))
             for a in data.get("forward_attempts", ())]
    return [(trunk, {"call": data["id"], "leg": leg, "at": data["ended_at"], **quality})
            for trunk, leg, quality in legs if quality and quality.get("mos") is not None]


class CallStore:
    """Call records in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "hotline",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.prefix = prefix
        self.clock = clock

    def save(self, record: CallRecord) -> None:
        self.save_snapshot(dataclasses.asdict(record))

    def save_snapshot(self, data: Mapping[str, Any]) -> None:
        """Save a record as `dataclasses.asdict` gives it. A finished call's measured legs
        go into their trunks' quality lists in the same transaction (saving the same
        record again adds nothing: a leg is the same member)."""
        call_id = data["id"]
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(call_id), json.dumps(data), ex=RECORD_RETENTION_S)
        pipe.zadd(f"{self.prefix}:calls", {call_id: data["started_at"]})
        pipe.zremrangebyscore(f"{self.prefix}:calls", 0, self.clock() - RECORD_RETENTION_S)
        if data["ended_at"] is not None:
            for trunk, leg in measured_legs(data):
                key = self._quality_key(trunk)
                pipe.zadd(key, {json.dumps(leg, sort_keys=True): data["ended_at"]})
                pipe.zremrangebyrank(key, 0, -QUALITY_KEPT - 1)
                pipe.expire(key, RECORD_RETENTION_S)
        pipe.execute()

    def save_quietly(self, record: CallRecord) -> None:
        """Save, logging instead of failing: a Redis outage must not drop the call itself."""
        try:
            self.save(record)
        except redis.RedisError as exc:
            logger.error("Call %s: record not saved, Redis unreachable: %s", record.id, exc)

    def get(self, call_id: str) -> CallRecord | None:
        text = cast(str | None, self.redis.get(self._key(call_id)))
        return None if text is None else CallRecord.from_json(text)

    def recent(self, limit: int) -> list[CallRecord]:
        ids = cast(list[str], self.redis.zrevrange(f"{self.prefix}:calls", 0, limit - 1))
        return self._records(ids)

    def since(self, started_at: float) -> list[CallRecord]:
        """Every call started at or after `started_at`, newest first."""
        ids = cast(list[str], self.redis.zrevrangebyscore(f"{self.prefix}:calls", "+inf",
                                                          started_at))
        return self._records(ids)

    def trunk_legs(self, trunks: Sequence[str], limit: int) -> dict[str, list[dict[str, Any]]]:
        """The latest `limit` measured legs each of `trunks` carried, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        for trunk in trunks:
            pipe.zrevrange(self._quality_key(trunk), 0, limit - 1)
        found = cast(list[list[str]], pipe.execute())
        return {trunk: [json.loads(leg) for leg in legs]
                for trunk, legs in zip(trunks, found, strict=True)}

    def _records(self, ids: list[str]) -> list[CallRecord]:
        if not ids:
            return []
        texts = cast(list[str | None], self.redis.mget([self._key(i) for i in ids]))
        return [CallRecord.from_json(t) for t in texts if t is not None]

    def _key(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def _quality_key(self, trunk: str) -> str:
        return f"{self.prefix}:quality:{trunk}"


class RecordWriter:
    """Saves live calls' records from a thread of its own, so a flow never waits on Redis.

    `update` takes a snapshot of the record and returns at once; the writer keeps only
    the latest snapshot of each call and saves it when it can. `save` is the call's last
    word: it waits (up to `wait_s`) until that snapshot is in Redis. A snapshot that
    cannot be saved (Redis away) is dropped for a newer one, and the last one is retried
    until `stop`.

    A call the writer `follow`s has its quality read on the writer's thread (the RTP
    engine's counters, read without a lock) into each snapshot saved, and its latest
    snapshot saved again every `refresh_s` when the quality changed, so a call that
    stays in one step (bridged to staff, say) still shows how it sounds. `save` ends
    that: the call's own thread writes the final figures."""

    def __init__(self, store: CallStore, retry_s: float = RETRY_S,
                 refresh_s: float = QUALITY_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.retry_s = retry_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._pending: dict[str, dict[str, Any] | None] = {}
        """Call id -> the latest snapshot not yet saved (`dataclasses.asdict`); None: the
        followed call's latest snapshot again, if its quality changed."""
        self._live: dict[str, Callable[[], LegQualities]] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        """A followed call's latest snapshot, saved again when its quality changes."""
        self._refresh_at = clock() + refresh_s
        self._saved: dict[str, threading.Event] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def follow(self, call_id: str, quality: Callable[[], LegQualities]) -> None:
        """Keep the live call's record current with `quality` until `save`; `quality`
        must not block (`RtpStream.quality`)."""
        with self._changed:
            self._live[call_id] = quality
            self._changed.notify()

    def update(self, record: CallRecord) -> None:
        """Save `record` as it is now, soon; never blocks on Redis."""
        snapshot = dataclasses.asdict(record)
        with self._changed:
            self._pending[record.id] = snapshot
            self._changed.notify()

    def save(self, record: CallRecord, wait_s: float = SAVE_WAIT_S) -> bool:
        """Save `record` as it is now and wait until it is stored; False if that took
        longer than `wait_s` (it is still saved once Redis answers, until `stop`)."""
        with self._changed:
            self._live.pop(record.id, None)
            self._latest.pop(record.id, None)
            saved = self._saved.setdefault(record.id, threading.Event())
            saved.clear()
        self.update(record)
        return saved.wait(wait_s)

    def stop(self, timeout: float = SAVE_WAIT_S) -> None:
        """Save what is pending (waiting up to `timeout`), then stop."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self._thread.join(timeout)
        with self._changed:
            unsaved = sum(1 for snapshot in self._pending.values() if snapshot is not None)
            if unsaved:
                logger.error("%d call records not saved at shutdown: Redis unreachable",
                             unsaved)

    def _run(self) -> None:
        while (job := self._next()) is not None:
            call_id, snapshot, quality, refresh = job
            changed = quality is not None and _with_quality(snapshot, call_id, quality)
            if refresh and not changed:
                continue
            try:
                self.store.save_snapshot(snapshot)
            except redis.RedisError as exc:
                with self._changed:
                    self._pending.setdefault(call_id, snapshot)  # unless a newer one came
                    stopping = self._stopping
                logger.warning("Call %s: record not saved yet, Redis unreachable: %s",
                               call_id, exc)
                if stopping:
                    return
                time.sleep(self.retry_s)
                continue
            with self._changed:
                if call_id not in self._pending and (saved := self._saved.pop(call_id, None)):
                    saved.set()

    def _next(self) -> tuple[str, dict[str, Any], Callable[[], LegQualities] | None,
                             bool] | None:
        """The next snapshot to save, its call's quality if followed, and whether it is
        only a refresh; waits for one, and is None once stopping with nothing left."""
        with self._changed:
            while True:
                now = self._clock()
                if now >= self._refresh_at:
                    self._refresh_at = now + self.refresh_s
                    if not self._stopping:
                        for call_id in self._latest:
                            self._pending.setdefault(call_id, None)
                if self._pending:
                    call_id = next(iter(self._pending))
                    snapshot = self._pending.pop(call_id)
                    quality = self._live.get(call_id)
                    if snapshot is not None and quality is not None:
                        self._latest[call_id] = snapshot
                    elif snapshot is None:
                        snapshot = self._latest.get(call_id)
                        if snapshot is None or quality is None:
                            continue
                        return call_id, snapshot, quality, True
                    return call_id, snapshot, quality, False
                if self._stopping:
                    return None
                self._changed.wait(self._refresh_at - now if self._live else None)


def _with_quality(snapshot: dict[str, Any], call_id: str,
                  quality: Callable[[], LegQualities]) -> bool:
    """Write a live call's quality, read now, into its snapshot; whether that changed it.
    The staff leg's goes to the latest forward attempt, the one bridged."""
    try:
        caller, staff = quality()
    except Exception:  # the record is saved all the same
        logger.exception("Call %s: reading its quality failed", call_id)
        return False
    changed = snapshot.get("quality") != caller
    snapshot["quality"] = caller
    attempts = snapshot["forward_attempts"]
    if staff is not None and attempts and attempts[-1]["outcome"] == ANSWERED:
        changed = changed or attempts[-1].get("quality") != staff
        attempts[-1]["quality"] = staff
    return changed
