"""Alerts from a running server: Kamailio carriers die and come back, a drill reports,
and Twilio (a local fake that checks requests as Twilio does) and a signed webhook hear
of it, once per event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import wait_for
from tests.failover.test_drill import Rig
from tests.peers import RedisServer
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ONCALL_PHONE = "+15551230001"
SECRET = "alerts-7c1d"


@pytest.fixture
def services() -> Iterator[tuple[FakeTwilio, WebhookReceiver]]:
    with FakeTwilio() as twilio, WebhookReceiver(SECRET) as webhook:
        yield twilio, webhook


@pytest.fixture
def rig(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis,
        services: tuple[FakeTwilio, WebhookReceiver]) -> Iterator[Rig]:
    twilio, webhook = services
    rig = Rig(tmp_path, redis_server, notify={
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                   "from_number": FROM_NUMBER, "api_base_url": twilio.url},
        "sms_to": [ONCALL_PHONE], "call_to": [ONCALL_PHONE],
        "webhook": {"url": webhook.endpoint, "secret": SECRET}})
    yield rig
    rig.stop()


def kinds(webhook: WebhookReceiver) -> list[str]:
    return [body["kind"] for body in webhook.bodies]


def test_trunk_outages_reach_on_call_staff_once(
        rig: Rig, services: tuple[FakeTwilio, WebhookReceiver]) -> None:
    twilio, webhook = services
    rig.start()
    rig.carriers["carrier-a"].kill()
    wait_for(lambda: "trunk_down" in kinds(webhook), timeout=15, what="trunk down alert")
    sms = twilio.created("Messages")
    assert [(m["To"], m["From"]) for m in sms] == [(ONCALL_PHONE, FROM_NUMBER)]
    assert sms[0]["Body"].startswith("Hotline trunk carrier-a is down") and \
        "Calls now go through carrier-b." in sms[0]["Body"]
    assert twilio.created("Calls") == [], "one trunk down is not urgent"

    rig.carriers["carrier-b"].kill()
    wait_for(lambda: "all_trunks_down" in kinds(webhook), timeout=15, what="all down alert")
    wait_for(lambda: len(twilio.created("Calls")) == 1, what="the urgent call")
    call = twilio.created("Calls")[0]
    assert call["To"] == ONCALL_PHONE and "Every hotline SIP trunk is down" in call["Twiml"]
    assert call["Twiml"].startswith("<Response><Say>")
    assert kinds(webhook) == ["trunk_down", "trunk_down", "all_trunks_down"]
    assert webhook.problems == [], "every webhook request was signed and well formed"

    rig.carriers["carrier-a"].start()
    wait_for(lambda: "trunk_up" in kinds(webhook), timeout=20, what="trunk up alert")
    body: dict[str, Any] = webhook.bodies[-1]
    assert body["details"]["trunk"] == "carrier-a" and body["node"] == "node-1"
    assert len(twilio.created("Calls")) == 1 and len(twilio.created("Messages")) == 4


def test_a_drill_result_is_sent(rig: Rig, services: tuple[FakeTwilio, WebhookReceiver]) -> None:
    twilio, webhook = services
    server = rig.start(calls=1)
    assert server.drill is not None
    report = server.drill.run("carrier-b", 1)
    wait_for(lambda: "drill_passed" in kinds(webhook), what="drill alert")
    body = webhook.bodies[-1]
    assert body["key"] == f"drill:{report.id}" and "PASSED" in body["details"]["report"]
    assert any("drill on carrier-b passed: 1 of 1" in m["Body"]
               for m in twilio.created("Messages"))
