"""Alerts from several nodes on one real Redis, to one webhook receiver on loopback: each
alert goes out once, and a node that claims an alert and then dies or hangs mid-send
does not keep it from the others."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from failover.config import NotifySettings, WebhookSettings
from failover.notify.alert import Alert, AlertKind, Delivery
from failover.notify.claims import AlertClaims, ClaimState
from failover.notify.notifier import Notifier
from tests.conftest import wait_for
from tests.twilio_fake import WebhookReceiver

FAST_RETRIES = (0.01, 0.02)
DOWN = Alert(AlertKind.TRUNK_DOWN, "trunk-down:carrier-a", "Trunk carrier-a is down.")
SEEN = "hotline:notify:seen:trunk-down:carrier-a"


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="failover.notify")
    return caplog


@pytest.fixture
def nodes() -> Iterator[list[Notifier]]:
    """The notifiers a test starts; stopped after it."""
    started: list[Notifier] = []
    yield started
    for notifier in started:
        notifier.stop()


def start(nodes: list[Notifier], hook: WebhookReceiver, client: redis.Redis, name: str,
          **options: Any) -> Notifier:
    """The notifier of node `name`, as `hotline serve` makes it, posting to `hook`."""
    settings = NotifySettings(webhook=WebhookSettings(url=hook.endpoint), dedupe_s=900)
    notifier = Notifier(settings, client, node=name, retry_delays_s=FAST_RETRIES,
                        recheck_s=0.02, **options)
    notifier.start()
    nodes.append(notifier)
    return notifier


def senders(hook: WebhookReceiver) -> list[str]:
    """The node of each alert the receiver took (answered 200)."""
    return [body["node"] for body in hook.bodies]


def test_an_event_every_node_sees_is_sent_once(redis_client: redis.Redis,
                                               nodes: list[Notifier]) -> None:
    with WebhookReceiver() as hook:
        each = [start(nodes, hook, redis_client, f"node-{n}") for n in (1, 2, 3)]
        for notifier in each:
            notifier.send(DOWN)
        assert all(notifier.flush(10.0) for notifier in each)
    assert len(senders(hook)) == 1
    assert sorted(sum(n.counts[o] for n in each) for o in ("sent", "duplicate")) == [1, 2]
    held = redis_client.get(SEEN)
    assert held is not None and held.startswith("sent ") and held.endswith(senders(hook)[0])
    assert 890_000 < redis_client.pttl(SEEN) <= 900_000


def test_an_alert_claimed_by_a_node_that_died_is_sent_by_another(
        redis_client: redis.Redis, nodes: list[Notifier], log: pytest.LogCaptureFixture) -> None:
    # node-1 claims the alert, as its notifier does before sending, and dies there
    dead = AlertClaims(redis_client, "hotline", "node-1", sending_s=0.3, dedupe_s=900)
    assert dead.claim(DOWN.key).state is ClaimState.OURS
    with WebhookReceiver() as hook:
        survivor = start(nodes, hook, redis_client, "node-2")
        survivor.send(DOWN)
        assert survivor.flush(10.0)
    assert senders(hook) == ["node-2"]
    assert survivor.deliveries() == [Delivery(DOWN.key, "webhook", "webhook", True)]
    assert (survivor.counts["waited"], survivor.counts["duplicate"]) == (1, 0)
    assert "Alert trunk-down:carrier-a: node-1 is sending it; waiting in case it does not " \
        "finish" in log.text
    held = redis_client.get(SEEN)
    assert held is not None and held.startswith("sent ") and held.endswith(" node-2")


def test_a_node_stuck_mid_send_loses_the_alert_to_another_and_stops(
        redis_client: redis.Redis, nodes: list[Notifier], log: pytest.LogCaptureFixture) -> None:
    with WebhookReceiver(hold_first=1) as hook:
        stuck = start(nodes, hook, redis_client, "node-1", sending_s=0.2)
        stuck.send(DOWN)
        wait_for(lambda: hook.holding == 1, what="node-1's request held")
        other = start(nodes, hook, redis_client, "node-2")
        other.send(DOWN)  # node-1 renews no more: its claim lapses and node-2 sends
        wait_for(lambda: senders(hook) == ["node-2"], what="node-2's alert")
        hook.release()  # node-1's request fails at last (503); it must not retry
        assert stuck.flush(10.0) and other.flush(10.0)
    assert [r.status for r in hook.received] == [200, 503]
    assert senders(hook) == ["node-2"]
    assert stuck.deliveries() == [] and stuck.counts["sent"] == 0
    assert "Alert trunk-down:carrier-a: this node's claim lapsed mid-send and node-2 took " \
        "the alert over; leaving the rest to it" in log.text


def test_an_alert_one_node_could_not_deliver_is_tried_by_another(
        redis_client: redis.Redis, nodes: list[Notifier]) -> None:
    with WebhookReceiver(hold_first=1, fail_first=3) as hook:
        first = start(nodes, hook, redis_client, "node-1")
        first.send(DOWN)
        wait_for(lambda: hook.holding == 1, what="node-1's request held")
        second = start(nodes, hook, redis_client, "node-2")
        second.send(DOWN)  # waits: node-1 holds the alert and renews its claim
        wait_for(lambda: second.counts["waited"] == 1, what="node-2 waiting")
        hook.release()  # node-1's three attempts fail; it gives the alert up
        assert first.flush(10.0) and second.flush(10.0)
    assert [(json.loads(r.raw)["node"], r.status) for r in hook.received] == [
        ("node-1", 503), ("node-1", 503), ("node-1", 503), ("node-2", 200)]
    assert first.deliveries() == [Delivery(DOWN.key, "webhook", "webhook", False)]
    assert second.deliveries() == [Delivery(DOWN.key, "webhook", "webhook", True)]
