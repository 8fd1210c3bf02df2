"""The notifier: alerts queued by anyone, delivered by one worker thread.

`Notifier.send()` only queues, so a slow Twilio or webhook never holds up a call or
the trunk monitor. Before delivery the worker claims the alert's key (`claims`): it
drops an alert sent within ``dedupe_s``, and puts aside one that another node is
sending, to look at it again until that node has sent it (a duplicate then) or has
died or failed (then this node sends it). It skips recipients over ``rate_limit``
messages per ``rate_window_s``. Both are kept in Redis so every node shares them; with
Redis unreachable they are kept in memory instead, as an alert about an outage must
still go out. Transient failures (connection errors, timeouts, 408, 429, 5xx) are
retried a few times; the rest are logged with the recipient's number masked. Redis
keys: ``{prefix}:notify:seen:{alert key}`` and
``{prefix}:notify:rate:{channel}:{recipient}:{window number}``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import prometheus_client
import redis
import requests
from twilio.base.exceptions import TwilioException  # type: ignore[import-untyped]

from failover.config import SIGNATURE_HEADER, NotifySettings, WebhookSettings
from failover.notify.alert import Alert, Delivery, mask_number
from failover.notify.claims import AlertClaims, Claim, ClaimState
from failover.notify.errors import DeliveryFailed
from failover.notify.twilio import twilio_client, voice_twiml
from failover.notify.webhook import TIMESTAMP_HEADER, USER_AGENT, payload, signature

logger = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 2.0)
"""Waits before the second and third attempts at a transient failure; then it gives up."""
STOP_TIMEOUT_S = 15.0
"""How long `stop()` waits for the alert in progress."""
MAX_QUEUED = 1000
"""Alerts waiting for the worker; beyond this the oldest are dropped."""
HISTORY_LEN = 500
"""Deliveries kept in `Notifier.history`."""
SENDING_SLACK_S = 5.0
"""Added to the longest an attempt and a retry's wait can take, for the sending lease."""
RECHECK_S = 1.0
"""How often a node looks again at an alert another node is sending."""

ALERTS = prometheus_client.Counter(
    "hotline_alerts", "Alert deliveries by channel (sms, call, webhook) and result (sent, "
    "failed, rate_limited)", ["channel", "result"], registry=None)
"""Process-wide; `ivr.metrics` registers it with each server's registry."""

_ERROR_TEXT_CHARS = 200


class Notifier:
    """Delivers alerts from its own thread; `send` is safe from any thread."""

    def __init__(self, settings: NotifySettings, redis_client: redis.Redis | None,
                 prefix: str = "hotline", *, node: str | None = None,
                 clock: Callable[[], float] = time.time,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
                 session: requests.Session | None = None, sending_s: float | None = None,
                 recheck_s: float = RECHECK_S) -> None:
        """`sending_s`: how long this node's claim on an alert holds without a renewal
        (default: twice the longest request timeout, plus the longest retry delay and
        `SENDING_SLACK_S`): a node that dies mid-send delays its alert by this much;
        `recheck_s`: how often an alert another node is sending is looked at again."""
        self.settings = settings
        self.node = node
        self.history: deque[Delivery] = deque(maxlen=HISTORY_LEN)
        self.counts: Counter[str] = Counter()
        """Outcomes by name: sent, failed, duplicate, waited (for another node sending
        it), rate_limited, dropped."""
        self._redis = redis_client
        self._prefix = prefix
        self._claims = None if redis_client is None else AlertClaims(
            redis_client, prefix, node or "-", dedupe_s=settings.dedupe_s,
            sending_s=sending_s or _sending_lease(settings, retry_delays_s))
        self._recheck_s = recheck_s
        self._clock = clock
        self._retry_delays_s = tuple(retry_delays_s)
        self._twilio: Any = twilio_client(settings.twilio) if settings.twilio else None
        self._from_number = settings.twilio.from_number if settings.twilio else ""
        self._session = session or requests.Session()
        self._memory = _MemoryCounts()
        self._redis_ok = True
        self._queue: deque[tuple[Alert, float]] = deque()
        self._waiting: list[tuple[float, Alert, float]] = []
        """Alerts another node is sending: (when to look again, monotonic; alert; at)."""
        self._busy = False
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Finish the alert in progress (without further retries) and stop; alerts still
        queued are dropped, so call `flush()` first to deliver them."""
        with self._cond:
            self._stopping.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            if self._queue:
                logger.error("Notifier stopped with %d alerts not sent: %s", len(self._queue),
                             ", ".join(alert.key for alert, _ in self._queue))
                self.counts["dropped"] += len(self._queue)
                self._queue.clear()
            if self._waiting:
                logger.warning("Notifier stopped while other nodes were sending %d alerts: %s",
                               len(self._waiting), ", ".join(a.key for _, a, _ in self._waiting))
                self.counts["dropped"] += len(self._waiting)
                self._waiting.clear()
        self._session.close()
        if self._twilio is not None and self._twilio.http_client.session is not None:
            self._twilio.http_client.session.close()

    def send(self, alert: Alert) -> None:
        """Queue `alert` for delivery; never blocks and never raises."""
        with self._cond:
            if self._stopping.is_set():
                logger.error("Alert %s not sent: the notifier is stopped", alert.key)
                return
            if len(self._queue) >= MAX_QUEUED:
                dropped, _ = self._queue.popleft()
                self.counts["dropped"] += 1
                logger.error("Alert queue full; dropped the oldest alert %s", dropped.key)
            self._queue.append((alert, self._clock()))
            self._cond.notify_all()

    def flush(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Wait until every queued alert was dealt with (also those another node was
        sending); False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and not self._waiting and not self._busy, timeout)

    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self.history)

    def _run(self) -> None:
        while True:
            with self._cond:
                item = None
                while item is None:
                    if self._stopping.is_set():
                        return  # what is left is dropped by `stop`
                    if (item := self._next()) is None:
                        self._cond.wait(self._until_due())
                alert, at, again = item
                self._busy = True
            try:
                self._process(alert, at, again)
            except Exception:  # a bug must not end alerting for good
                logger.exception("Alert %s: delivery failed unexpectedly", alert.key)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next(self) -> tuple[Alert, float, bool] | None:
        """The next alert to deal with: queued first, then one due to be looked at again
        (with the lock held)."""
        if self._queue:
            alert, at = self._queue.popleft()
            return alert, at, False
        now = time.monotonic()
        for i, (due, alert, at) in enumerate(self._waiting):
            if due <= now:
                del self._waiting[i]
                return alert, at, True
        return None

    def _until_due(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.0, min(due for due, _, _ in self._waiting) - time.monotonic())

    def _process(self, alert: Alert, at: float, again: bool = False) -> None:
        claim = self._claim(alert.key, again)
        if claim.state is ClaimState.SENT:
            logger.info("Alert %s not sent: already sent within %g s%s", alert.key,
                        self.settings.dedupe_s, f" (by {claim.holder})" if claim.holder else "")
            self._count("duplicate")
            return
        if claim.state is ClaimState.SENDING:
            self._wait_for(alert, at, claim, again)
            return
        results: list[bool | None] = []
        try:
            for channel, recipient, attempt in self._deliveries(alert, at):
                results.append(self._deliver(alert, channel, recipient, attempt, claim))
        except _TakenOver as exc:
            logger.warning("Alert %s: this node's claim lapsed mid-send and %s took the alert "
                           "over; leaving the rest to it", alert.key, exc.holder)
            return
        if False in results and True not in results:
            self._release(alert.key, claim)  # nobody heard it: let another try again
        else:
            self._sent(alert.key, claim)

    def _deliveries(self, alert: Alert, at: float) -> Iterator[tuple[str, str,
                                                                     Callable[[], str]]]:
        """Each (channel, recipient, attempt) the alert goes to."""
        if self._twilio is not None:
            for number in self.settings.sms_to:
                yield "sms", number, functools.partial(self._sms, number, alert)
            for number in self.settings.call_to if alert.urgent else []:
                yield "call", number, functools.partial(self._call, number, alert)
        webhook = self.settings.webhook
        if webhook is not None and webhook.url is not None:
            yield "webhook", "webhook", functools.partial(self._post, webhook, webhook.url,
                                                          alert, at)

    def _wait_for(self, alert: Alert, at: float, claim: Claim, again: bool) -> None:
        """Put `alert` aside while another node sends it, and look again soon."""
        if not again:
            logger.info("Alert %s: %s is sending it; waiting in case it does not finish",
                        alert.key, claim.holder)
            self._count("waited")
        wait_s = min(max(claim.left_s, 0.01), self._recheck_s)
        with self._cond:
            self._waiting.append((time.monotonic() + wait_s, alert, at))

    def _deliver(self, alert: Alert, channel: str, recipient: str,
                 attempt: Callable[[], str], claim: Claim) -> bool | None:
        """Deliver by `channel` with retries, renewing the claim before each attempt;
        None if the rate limit skipped it."""
        shown = mask_number(recipient)
        if not self._within_rate(channel, recipient, shown):
            return None
        delays, number = iter(self._retry_delays_s), 1
        while True:
            self._renew(alert.key, claim)
            try:
                reference = _wrapped(attempt)
            except DeliveryFailed as exc:
                delay = next(delays, None) if exc.transient else None
                if delay is not None:
                    logger.warning("Alert %s by %s to %s: attempt %d failed, retrying in "
                                   "%g s: %s", alert.key, channel, shown, number, delay, exc)
                    if not self._stopping.wait(delay):
                        number += 1
                        continue
                logger.error("Alert %s not sent by %s to %s (attempt %d): %s",
                             alert.key, channel, shown, number, exc)
                return self._record(alert, channel, recipient, False)
            logger.info("Alert %s sent by %s to %s (%s, attempt %d)", alert.key, channel,
                        shown, reference, number)
            return self._record(alert, channel, recipient, True)

    def _record(self, alert: Alert, channel: str, recipient: str, ok: bool) -> bool:
        with self._cond:
            self.history.append(Delivery(alert.key, channel, recipient, ok))
        self._count("sent" if ok else "failed")
        ALERTS.labels(channel, "sent" if ok else "failed").inc()
        return ok

    def _count(self, outcome: str, number: int = 1) -> None:
        with self._cond:
            self.counts[outcome] += number

    def _sms(self, number: str, alert: Alert) -> str:
        message = self._twilio.messages.create(to=number, from_=self._from_number,
                                               body=alert.text)
        return str(message.sid)

    def _call(self, number: str, alert: Alert) -> str:
        call = self._twilio.calls.create(to=number, from_=self._from_number,
                                        twiml=voice_twiml(alert.text))
        return str(call.sid)

    def _post(self, webhook: WebhookSettings, url: str, alert: Alert, at: float) -> str:
        """POST `alert` to the webhook; the URL is never logged (it may hold a token)."""
        body = json.dumps(payload(alert, at, self.node), separators=(",", ":"),
                          default=str).encode()
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   TIMESTAMP_HEADER: timestamp}
        if webhook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(timestamp, body,
                                                  webhook.secret.get_secret_value())
        response = self._session.post(url, data=body, headers=headers,
                                      timeout=webhook.timeout_s, allow_redirects=False)
        with response:
            if not 200 <= response.status_code < 300:
                raise DeliveryFailed(_short(f"{response.reason or ''}: {response.text}"),
                                     response.status_code)
            return f"HTTP {response.status_code}"

    def _claim(self, key: str, again: bool) -> Claim:
        """Claim `key` to send it now (see `claims`). With Redis unreachable, this node's
        memory decides, and an alert another node was sending is sent (twice, maybe,
        which for an alert is the better mistake)."""
        if self.settings.dedupe_s <= 0:
            return Claim(ClaimState.OURS)
        seen = f"{self._prefix}:notify:seen:{key}"
        fresh = self._memory.claim(seen, self._clock(), self.settings.dedupe_s) or again
        if self._claims is not None:
            try:
                claim = self._claims.claim(key)
                self._redis_back()
                return claim
            except redis.RedisError as exc:
                self._redis_lost(exc)
        return Claim(ClaimState.OURS if fresh else ClaimState.SENT)

    def _renew(self, key: str, claim: Claim) -> None:
        """Renew our claim before an attempt; raise _TakenOver if another node has it."""
        if self._claims is None or not claim.value:
            return
        try:
            renewed = self._claims.renew(key, claim)
        except redis.RedisError as exc:
            self._redis_lost(exc)  # keep sending: an outage alert must go out
            return
        if not renewed:
            raise _TakenOver(self._holder(key))

    def _sent(self, key: str, claim: Claim) -> None:
        if self._claims is None or not claim.value:
            return
        try:
            if not self._claims.sent(key, claim, self._clock()):
                logger.warning("Alert %s: sent here and by %s too (this node's claim had "
                               "lapsed)", key, self._holder(key))
        except redis.RedisError as exc:
            self._redis_lost(exc)

    def _release(self, key: str, claim: Claim) -> None:
        self._memory.forget(f"{self._prefix}:notify:seen:{key}")
        if self._claims is None or not claim.value:
            return
        try:
            self._claims.release(key, claim)
        except redis.RedisError as exc:
            self._redis_lost(exc)

    def _holder(self, key: str) -> str:
        """Which node holds `key` now, for a log line."""
        assert self._redis is not None and self._claims is not None
        with contextlib.suppress(redis.RedisError):
            held = self._redis.get(self._claims.key(key))
            if held is not None:
                return str(held).split(" ", 2)[-1]
        return "another node"

    def _within_rate(self, channel: str, recipient: str, shown: str) -> bool:
        window_s, now = self.settings.rate_window_s, self._clock()
        key = f"{self._prefix}:notify:rate:{channel}:{recipient}:{int(now // window_s)}"
        count = self._memory.count(key, now, window_s)
        try:
            if self._redis is not None:
                pipe = self._redis.pipeline()
                pipe.incr(key)
                pipe.pexpire(key, max(1, int(window_s * 1000)))
                count = int(pipe.execute()[0])
                self._redis_back()
        except redis.RedisError as exc:
            self._redis_lost(exc)
        if count <= self.settings.rate_limit:
            return True
        if count == self.settings.rate_limit + 1:
            logger.warning("Rate limit: no more alerts by %s to %s in this %g s window "
                           "(limit %d)", channel, shown, window_s, self.settings.rate_limit)
        self._count("rate_limited")
        ALERTS.labels(channel, "rate_limited").inc()
        return False

    def _redis_lost(self, exc: redis.RedisError) -> None:
        if self._redis_ok:
            logger.warning("Alerts: Redis unreachable, dedupe and rate limits kept in memory "
                           "on this node only: %s", exc)
        self._redis_ok = False

    def _redis_back(self) -> None:
        if not self._redis_ok:
            logger.info("Alerts: Redis reachable again")
        self._redis_ok = True


class _TakenOver(Exception):
    """Another node took over an alert this node was sending."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class _MemoryCounts:
    """Dedupe and rate counts of this process, for when Redis is unreachable."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, float]] = {}

    def claim(self, key: str, now: float, ttl_s: float) -> bool:
        self._prune(now)
        fresh = key not in self._entries
        if fresh:
            self._entries[key] = (1, now + ttl_s)
        return fresh

    def count(self, key: str, now: float, ttl_s: float) -> int:
        self._prune(now)
        count, expires = self._entries.get(key, (0, now + ttl_s))
        self._entries[key] = (count + 1, expires)
        return count + 1

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]


def _sending_lease(settings: NotifySettings, retry_delays_s: Sequence[float]) -> float:
    """How long a sending claim must hold between renewals: one attempt (a connect and a
    read, each up to the longest timeout) and the longest wait before a retry."""
    timeouts = [s.timeout_s for s in (settings.twilio, settings.webhook) if s is not None]
    return 2 * max(timeouts, default=0.0) + max(retry_delays_s, default=0.0) + SENDING_SLACK_S


def _wrapped(attempt: Callable[[], str]) -> str:
    """Run one delivery attempt, turning Twilio's and requests' errors into DeliveryFailed."""
    try:
        return attempt()
    except TwilioException as exc:
        status, code = getattr(exc, "status", None), getattr(exc, "code", None)
        detail = getattr(exc, "msg", None) or getattr(exc, "detail", None) or type(exc).__name__
        raise DeliveryFailed(_short(str(detail)), status, code) from exc
    except requests.Timeout as exc:
        raise DeliveryFailed(f"no answer in time ({type(exc).__name__})",
                             transient=True) from exc
    except requests.RequestException as exc:
        # str(exc) names the URL, and a webhook's URL may carry its token.
        reason = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
        raise DeliveryFailed(f"{type(exc).__name__}: {reason[0] if reason else 'failed'}"
                             .strip(), transient=True) from exc


def _short(text: str) -> str:
    text = " ".join(text.split()).strip(": ")
    return text if len(text) <= _ERROR_TEXT_CHARS else text[:_ERROR_TEXT_CHARS] + "..."
