"""Fixtures for the HTTP app's tests: the Twilio webhooks of a flow, in the API's app,
with a roster whose clock is pinned."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask.testing import FlaskClient

from failover.router import Router
from ivr.clock import fixed
from ivr.flow.model import Flow
from ivr.flow.oncall import load_oncall
from ivr.flow.runner import FlowRunner
from ivr.flow.voicebot import VoiceBot
from ivr.http.app import create_app
from ivr.http.twilio import TwilioVoice
from ivr.records import SPOOL_PATH, CallRecord, CallStore, RecordSpool, RecordWriter
from ivr.settings import Settings, TwilioVoiceSettings
from speech.prompts import PromptCache
from tests.conftest import wait_for
from tests.twilio_caller import PUBLIC_URL
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN
from trunks.monitor import TrunkView

API_TOKEN = "api-token-0123456789abcdef"
ALICE, BOB = "+15550000001", "+15550000002"
CALLER = "+8613912345678"

MakeVoice = Callable[..., tuple[TwilioVoice, FlaskClient]]


class NoTrunks:
    """The monitor of a hotline whose only calls come from Twilio: <Dial> places them."""

    def view(self) -> TrunkView:
        return TrunkView((), {}, {})


ALICE_ON_DUTY = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
"""The flows' clock: a Monday after the 09:00 handover, Alice's week (48 weeks in)."""


@pytest.fixture
def oncall_file(tmp_path: Path) -> Path:
    path = tmp_path / "oncall.yaml"
    path.write_text(yaml.safe_dump({
        "timezone": "UTC",
        "people": {"alice": {"name": "Alice", "phone": ALICE},
                   "bob": {"name": "Bob", "phone": BOB}},
        "rotation": {"order": ["alice", "bob"], "start": "2026-01-05", "handover": "09:00",
                     "every_days": 7}}))
    return path


@pytest.fixture
def app_settings() -> Settings:
    return Settings.model_validate({
        "node": "node-1", "trunks": [{"name": "carrier-a", "mode": "ip",
                                      "proxy": "127.0.0.1:5999"}]})


@pytest.fixture
def make_voice(espeak_prompts: PromptCache, oncall_file: Path, redis_client: redis.Redis,
               app_settings: Settings, tmp_path: Path) -> Iterator[MakeVoice]:
    """The Twilio webhooks for a flow, in the API's app; every call ended afterwards.
    Their records go to Redis through `client` (default: the session's Redis)."""
    made: list[tuple[TwilioVoice, RecordWriter]] = []

    def make(flow: dict[str, Any], bot: VoiceBot | None = None,
             client: redis.Redis | None = None,
             **settings: Any) -> tuple[TwilioVoice, FlaskClient]:
        parsed = Flow.model_validate(flow)
        espeak_prompts.warm(*parsed.prompts())
        runner = FlowRunner(parsed, espeak_prompts, now=fixed(ALICE_ON_DUTY),
                            oncall=load_oncall(oncall_file),
                            dialer=Router(NoTrunks(), {}), bot=bot)
        store = CallStore(client or redis_client)
        records = RecordWriter(store, RecordSpool(tmp_path / f"var-{len(made)}" / SPOOL_PATH),
                               retry_s=0.1)
        records.start()
        voice = TwilioVoice(TwilioVoiceSettings(**{
            "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "public_url": PUBLIC_URL,
            **settings}), runner, store, records, no_input_s=3)
        made.append((voice, records))
        return voice, create_app(app_settings, redis_client, API_TOKEN, voice).test_client()

    yield make
    for voice, records in made:
        voice.stop()
        records.stop()


def record_of(redis_client: redis.Redis, sid: str) -> CallRecord:
    """The call's record, once its flow has finished."""
    store = CallStore(redis_client)
    wait_for(lambda: (r := store.get(sid)) is not None and r.ended_at is not None,
             what=f"the record of {sid} finished")
    record = store.get(sid)
    assert record is not None
    return record
