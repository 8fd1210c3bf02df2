"""Alerts through a fake Twilio and a webhook receiver on loopback, counted in a real Redis."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from failover.config import NotifySettings, TwilioSettings, WebhookSettings
from failover.notify.alert import Alert, AlertKind, Delivery, mask_number
from failover.notify.notifier import Notifier
from failover.notify.twilio import twilio_client
from ivr.settings import ConfigError, load_yaml
from tests.conftest import wait_for
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio, WebhookReceiver

ALICE, BOB = "+15551230001", "+15551230002"
SECRET = "hook-secret-4d2b"
FAST_RETRIES = (0.01, 0.02)
"""Backoff scaled down: three attempts within a few hundred milliseconds."""
MID_WINDOW = 1_800_000_000.0 + 1800
"""A wall clock half-way through an hour, so a test's alerts share one rate window."""
DOWN = Alert(AlertKind.TRUNK_DOWN, "trunk-down:carrier-a", "Trunk carrier-a is down.",
             details={"trunk": "carrier-a", "reason": "no response to OPTIONS"})


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def settings(fake: FakeTwilio | None = None, token: str = AUTH_TOKEN, **values: Any) -> \
        NotifySettings:
    if fake is not None:
        values["twilio"] = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=token,
                                          from_number=FROM_NUMBER, api_base_url=fake.url,
                                          timeout_s=values.pop("timeout_s", 2.0))
        values.setdefault("sms_to", [ALICE])
    return NotifySettings(**values)


def deliver(config: NotifySettings, client: redis.Redis | None, *alerts: Alert,
            node: str | None = "node-1", clock: Callable[[], float] = time.time) -> Notifier:
    """Start a notifier, send `alerts`, wait until it is done with them, stop it."""
    notifier = Notifier(config, client, node=node, clock=clock, retry_delays_s=FAST_RETRIES)
    notifier.start()
    try:
        for alert in alerts:
            notifier.send(alert)
        assert notifier.flush(10.0)
    finally:
        notifier.stop()
    return notifier


def closed_port_redis() -> redis.Redis:
    """A client for a Redis that is not there: every command fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return redis.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def alert(key: str, text: str = "Trunk carrier-b is down.", **changes: Any) -> Alert:
    return Alert(changes.pop("kind", AlertKind.TRUNK_DOWN), key, text, **changes)


def test_an_sms_goes_to_every_recipient_from_our_number(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    notifier = deliver(settings(twilio, sms_to=[ALICE, "+1 (555) 123-0002"]), redis_client,
                       DOWN)
    messages = twilio.created("Messages")
    assert [m["To"] for m in messages] == [ALICE, BOB]
    assert {(m["From"], m["Body"]) for m in messages} == {(FROM_NUMBER, DOWN.text)}
    request = twilio.received[0]
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert twilio.created("Calls") == []  # not urgent
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, True),
                                     Delivery(DOWN.key, "sms", BOB, True)]
    assert "Alert trunk-down:carrier-a sent by sms to +*******0001 (SM" in log.text
    assert ALICE not in log.text


def test_an_urgent_alert_also_calls_and_says_the_text_escaped(
        twilio: FakeTwilio, redis_client: redis.Redis) -> None:
    text = "All trunks are down <carrier-a & carrier-b>; callers hear busy."
    urgent = Alert(AlertKind.ALL_TRUNKS_DOWN, "all-down", text)  # urgent by kind
    deliver(settings(twilio, call_to=[BOB]), redis_client, urgent)
    assert urgent.urgent
    assert [m["To"] for m in twilio.created("Messages")] == [ALICE]
    (call,) = twilio.created("Calls")
    assert (call["To"], call["From"], call.get("Url")) == (BOB, FROM_NUMBER, None)
    assert "&lt;carrier-a &amp; carrier-b&gt;" in call["Twiml"]
    root = ET.fromstring(call["Twiml"])
    assert [(e.tag, e.text, e.attrib) for e in root] == [
        ("Say", text, {}), ("Pause", None, {"length": "1"}), ("Say", text, {})]


def test_a_wrong_token_is_logged_once_and_not_retried(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    wrong = "not-the-token-1234"
    notifier = deliver(settings(twilio, token=wrong), redis_client, DOWN, DOWN)
    assert [(r.status, r.code) for r in twilio.received] == [(401, 20003), (401, 20003)]
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, False)] * 2
    assert "not sent by sms to +*******0001 (attempt 1): Twilio error 20003 (HTTP 401)" \
        in log.text
    assert "retrying" not in log.text
    # Nobody was told, so the second occurrence was not held back as a duplicate.
    assert notifier.counts["duplicate"] == 0
    assert wrong not in log.text


@pytest.mark.parametrize(("status", "code"), [(503, None), (429, 20429), (500, 20500)])
def test_transient_failures_are_retried_until_delivered(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture,
        status: int, code: int | None) -> None:
    twilio.fail_next(2, status, code)
    notifier = deliver(settings(twilio), redis_client, DOWN)
    assert [r.status for r in twilio.received] == [status, status, 201]
    assert len(twilio.created("Messages")) == 1
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, True)]
    assert "attempt 2 failed, retrying in 0.02 s" in log.text
    assert "(SM" in log.text and "attempt 3)" in log.text


def test_it_gives_up_after_three_attempts(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    twilio.fail_next(5, 503)
    notifier = deliver(settings(twilio), redis_client, DOWN)
    assert len(twilio.received) == 3
    assert notifier.counts["failed"] == 1
    assert "not sent by sms to +*******0001 (attempt 3): HTTP 503" in log.text


def test_a_rejected_number_is_not_retried_and_stays_masked(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    invalid = "+0123456789"  # fine to our settings, not E.164 to Twilio
    notifier = deliver(settings(twilio, sms_to=[invalid, ALICE]), redis_client, DOWN)
    assert [(r.fields["To"], r.status, r.code) for r in twilio.received] == [
        (invalid, 400, 21211), (ALICE, 201, None)]
    assert [d.ok for d in notifier.deliveries()] == [False, True]
    assert "to +******6789 (attempt 1): Twilio error 21211 (HTTP 400)" in log.text
    assert "The 'To' number +******6789 is not a valid phone number" in log.text
    assert invalid not in log.text


def test_a_timeout_is_retried(twilio: FakeTwilio, redis_client: redis.Redis) -> None:
    twilio.slow_next(1, 0.6)
    notifier = deliver(settings(twilio, timeout_s=0.2), redis_client, DOWN)
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, True)]
    # Twilio took the slow one too: a retried timeout can send twice.
    wait_for(lambda: len(twilio.received) == 2, 5.0, "the slow request")
    assert len(twilio.created("Messages")) == 2


def test_an_unreachable_twilio_fails_after_retries(
        redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    with FakeTwilio() as gone:
        config = settings(gone)
    notifier = deliver(config, redis_client, DOWN)
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, False)]
    assert log.text.count("retrying in 0.01 s: ConnectionError: [Errno 111] Connection "
                          "refused") == 1
    assert "(attempt 3): ConnectionError: [Errno 111] Connection refused" in log.text


def test_the_same_key_is_sent_once_per_window(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    other = alert("trunk-down:carrier-b")
    notifier = deliver(settings(twilio, dedupe_s=60), redis_client, DOWN, DOWN, other)
    assert [m["Body"] for m in twilio.created("Messages")] == [DOWN.text, other.text]
    assert notifier.counts["duplicate"] == 1
    assert "Alert trunk-down:carrier-a not sent: already sent within 60 s" in log.text
    assert 0 < redis_client.pttl("hotline:notify:seen:trunk-down:carrier-a") <= 60_000


def test_the_same_key_is_sent_again_after_the_window(
        twilio: FakeTwilio, redis_client: redis.Redis) -> None:
    config = settings(twilio, dedupe_s=0.2)
    deliver(config, redis_client, DOWN)
    time.sleep(0.3)
    deliver(config, redis_client, DOWN)
    assert [m["Body"] for m in twilio.created("Messages")] == [DOWN.text] * 2


def test_recipients_over_the_rate_limit_are_skipped(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver() as hook:
        config = settings(twilio, rate_limit=2, webhook=WebhookSettings(url=hook.endpoint))
        alerts = [alert(f"ticket-p1:{n}", kind=AlertKind.TICKET_P1) for n in range(4)]
        notifier = deliver(config, redis_client, *alerts, clock=lambda: MID_WINDOW)
    assert len(twilio.created("Messages")) == 2
    assert [b["key"] for b in hook.bodies] == ["ticket-p1:0", "ticket-p1:1"]
    assert notifier.counts["rate_limited"] == 4  # two alerts, two channels
    assert log.text.count("Rate limit: no more alerts by sms to +*******0001") == 1
    assert log.text.count("Rate limit: no more alerts by webhook to webhook") == 1
    window = f"hotline:notify:rate:sms:{ALICE}:{int(MID_WINDOW // 3600)}"
    assert redis_client.get(window) == "4"
    assert 0 < redis_client.ttl(window) <= 3600


def test_without_redis_alerts_still_go_out_deduped_in_memory(
        twilio: FakeTwilio, log: pytest.LogCaptureFixture) -> None:
    client = closed_port_redis()
    try:
        alerts = [DOWN, DOWN, *(alert(f"k{n}") for n in range(3))]
        notifier = deliver(settings(twilio, rate_limit=3), client, *alerts,
                           clock=lambda: MID_WINDOW)
    finally:
        client.close()
    assert [m["Body"] for m in twilio.created("Messages")] == [DOWN.text] + [alerts[2].text] * 2
    assert (notifier.counts["duplicate"], notifier.counts["rate_limited"]) == (1, 1)
    assert log.text.count("Redis unreachable, dedupe and rate limits kept in memory") == 1


def test_the_webhook_gets_a_signed_json_body(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(secret=SECRET, fail_first=1) as hook:
        config = settings(twilio, webhook=WebhookSettings(url=hook.endpoint, secret=SECRET))
        before = time.time()
        deliver(config, redis_client, DOWN)
    assert hook.problems == []
    assert [r.status for r in hook.received] == [503, 200]
    (body,) = hook.bodies
    assert {k: v for k, v in body.items() if k != "at"} == {
        "kind": "trunk_down", "key": DOWN.key, "text": DOWN.text, "urgent": False,
        "details": DOWN.details, "node": "node-1"}
    assert body["at"].endswith("+00:00")
    assert before - 0.001 <= datetime.datetime.fromisoformat(body["at"]).timestamp() < before + 5
    headers = hook.received[-1].headers
    assert headers["x-hotline-signature"].startswith("sha256=")
    assert abs(int(headers["x-hotline-timestamp"]) - before) < 5
    assert SECRET not in log.text and hook.endpoint not in log.text


def test_a_receiver_with_another_secret_refuses_and_it_is_not_retried(
        redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(secret="another secret") as hook:
        config = settings(webhook=WebhookSettings(url=hook.endpoint, secret=SECRET))
        notifier = deliver(config, redis_client, DOWN)
    assert hook.problems == ["bad signature"] and len(hook.received) == 1
    assert notifier.deliveries() == [Delivery(DOWN.key, "webhook", "webhook", False)]
    assert "not sent by webhook to webhook (attempt 1): HTTP 400" in log.text


def test_without_twilio_only_the_webhook_is_used(redis_client: redis.Redis) -> None:
    with WebhookReceiver() as hook:
        config = settings(webhook={"url": hook.endpoint, "secret": ""})
        urgent = alert("all-down", kind=AlertKind.ALL_TRUNKS_DOWN)
        notifier = deliver(config, redis_client, urgent, node=None)
    assert hook.problems == []
    assert "x-hotline-signature" not in hook.received[0].headers
    (body,) = hook.bodies
    assert body["urgent"] is True and "node" not in body
    assert notifier.deliveries() == [Delivery("all-down", "webhook", "webhook", True)]


def test_send_returns_before_twilio_answers(twilio: FakeTwilio,
                                            redis_client: redis.Redis) -> None:
    twilio.slow_next(1, 0.3)
    notifier = Notifier(settings(twilio), redis_client, retry_delays_s=FAST_RETRIES)
    notifier.start()
    try:
        notifier.send(DOWN)
        assert notifier.deliveries() == []  # queued; the worker is still waiting for Twilio
        assert notifier.flush(5.0)
    finally:
        notifier.stop()
    assert notifier.deliveries() == [Delivery(DOWN.key, "sms", ALICE, True)]


def test_send_never_raises_and_stop_reports_what_was_left(
        redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(settings(webhook=WebhookSettings(url="http://127.0.0.1:9/x")),
                        redis_client)
    notifier.send(DOWN)  # not started: queued
    assert not notifier.flush(0.05)
    notifier.stop()
    notifier.send(alert("late"))
    assert notifier.counts["dropped"] == 1 and notifier.deliveries() == []
    assert "Notifier stopped with 1 alerts not sent: trunk-down:carrier-a" in log.text
    assert "Alert late not sent: the notifier is stopped" in log.text


def test_no_secret_reaches_the_logs(
        twilio: FakeTwilio, redis_client: redis.Redis, log: pytest.LogCaptureFixture) -> None:
    twilio.fail_next(1, 503)
    with WebhookReceiver(secret=SECRET) as hook:
        config = settings(twilio, call_to=[BOB],
                          webhook=WebhookSettings(url=hook.endpoint, secret=SECRET))
        deliver(config, redis_client, Alert(AlertKind.DRILL_FAILED, "drill", "Drill failed.",
                                            urgent=True))
    assert len(twilio.created("Calls")) == 1 and len(hook.bodies) == 1
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    for secret in (AUTH_TOKEN, SECRET, basic):
        assert secret not in log.text
    assert AUTH_TOKEN not in repr(config) and SECRET not in repr(config)


def test_twilio_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("TWILIO_ACCOUNT_SID", "AC" + "f" * 32), ("TWILIO_AUTH_TOKEN", "x"),
                        ("TWILIO_REGION", "ie1"), ("TWILIO_EDGE", "dublin")]:
        monkeypatch.setenv(name, value)
    config = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                            from_number=FROM_NUMBER)
    client = twilio_client(config)
    try:
        assert client.auth == (ACCOUNT_SID, AUTH_TOKEN)
        assert client.get_hostname("https://api.twilio.com/2010-04-01") == \
            "https://api.twilio.com/2010-04-01"
    finally:
        client.http_client.session.close()


@pytest.mark.parametrize(("values", "message"), [
    ({"sms_to": ["+1555-CALL-NOW"]}, "'+1555CALLNOW' is not a phone number"),
    ({"sms_to": [15551230001]}, "put phone numbers in quotes"),
    ({"twilio": {"account_sid": "SK" + "0" * 32}}, "not an API key"),
    ({"twilio": {"account_sid": ""}}, "twilio.account_sid: is empty; set it, or leave out"),
    ({"twilio": {"auth_token": ""}}, "twilio.auth_token: is empty"),
    ({"twilio": {"from_number": "5559990000"}}, "twilio.from_number: expected an E.164"),
    ({"twilio": None}, "sms_to and call_to need a twilio section"),
    ({"webhook": {"url": "ftp://x"}}, "webhook.url: expected an http:// or https:// URL"),
    ({"rate_limit": 0}, "rate_limit: Input should be greater than or equal to 1"),
])
def test_bad_settings_are_explained(tmp_path: Path, values: dict[str, Any],
                                    message: str) -> None:
    twilio = {"account_sid": "${TWILIO_ACCOUNT_SID:-}", "auth_token": "${TWILIO_AUTH_TOKEN}",
              "from_number": FROM_NUMBER}
    data: dict[str, Any] = {"twilio": twilio, "sms_to": [ALICE]}
    for key, value in values.items():
        data[key] = {**twilio, **value} if key == "twilio" and value else value
    path = tmp_path / "notify.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML; an int stays an int
    environ = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    with pytest.raises(ConfigError) as caught:
        load_yaml(path, NotifySettings, environ)
    assert message in str(caught.value)
    assert AUTH_TOKEN not in str(caught.value)


def test_empty_values_from_the_environment_mean_unset(tmp_path: Path) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text("sms_to: ['${ONCALL_PHONE:-}']\nwebhook: {url: '${ALERT_HOOK:-}'}\n")
    config = load_yaml(path, NotifySettings, {})
    assert (config.twilio, config.sms_to, config.webhook) == (None, [], WebhookSettings())
    with pytest.raises(ValidationError):
        TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                       from_number=FROM_NUMBER, api_base_url="http://h/with/path")


def test_numbers_are_masked_but_their_last_four_digits() -> None:
    assert mask_number("+15551230001") == "+*******0001"
    assert mask_number("123") == "123"
