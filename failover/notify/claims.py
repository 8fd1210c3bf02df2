"""Which node sends an alert, and whether it went out: claims on alert keys in Redis.

Every node that sees an event (a trunk going down, say) queues the same alert, so the
node about to send claims the alert's key, ``{prefix}:notify:seen:{key}``. The claim
starts as a short *sending* lease, ``sending <token> <node>``, that the sender renews
before each delivery attempt. Once the alert is delivered (or its recipients were all
over their rate limit) the claim becomes ``sent <unix time> <node>`` for the dedupe
window; when nobody received it, the claim is released, so a later occurrence, or
another node's copy, tries again. A node holding the same alert:

- finds `sent`: the alert is a duplicate, dropped;
- finds `sending`: it waits and looks again. If the sender dies mid-send its lease
  lapses within `sending_s`, and this node claims the alert and sends it.

So a dead sender delays its alert by one lease rather than burning the key for the
whole dedupe window. A value written before these leases (a bare Unix time) counts as
sent.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import cast

import redis

_CLAIM = """
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'', 0}
end
return {held, redis.call('PTTL', KEYS[1])}
"""
"""Claim KEYS[1] with the sending value ARGV[1] for ARGV[2] ms; else what holds it and
for how many ms more."""
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""Renew our sending lease (or take it again if it lapsed and nobody took it)."""
_SENT = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
"""Turn our sending lease (or a lapsed one) into the sent mark ARGV[2] for ARGV[3] ms."""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClaimState(enum.StrEnum):
    OURS = "ours"
    """This node sends the alert."""
    SENDING = "sending"
    """Another node is sending it: look again later."""
    SENT = "sent"
    """It went out within the dedupe window: a duplicate."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming an alert key."""

    state: ClaimState
    holder: str = ""
    """The node holding the key, when not ours."""
    value: str = ""
    """Our sending value, when ours and held in Redis."""
    left_s: float = 0.0
    """How long the other node's sending lease still runs."""


class AlertClaims:
    """Claims on alert keys for one node, in Redis; errors are redis.RedisError."""

    def __init__(self, client: redis.Redis, prefix: str, node: str, *, sending_s: float,
                 dedupe_s: float) -> None:
        """`sending_s`: the sending lease, renewed before each delivery attempt, so
        longer than an attempt and a retry's wait; `dedupe_s`: how long a sent alert
        keeps its key."""
        self.prefix, self.node = prefix, node
        self.sending_ms = max(1, int(sending_s * 1000))
        self.dedupe_ms = max(1, int(dedupe_s * 1000))
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._sent = client.register_script(_SENT)
        self._release = client.register_script(_RELEASE)

    def key(self, alert_key: str) -> str:
        return f"{self.prefix}:notify:seen:{alert_key}"

    def claim(self, alert_key: str) -> Claim:
        """Claim `alert_key` to send it, unless another node sends or sent it."""
        value = f"sending {secrets.token_hex(6)} {self.node}"
        held, left_ms = cast(list[str | int], self._claim(
            keys=[self.key(alert_key)], args=[value, self.sending_ms]))
        if held == "":
            return Claim(ClaimState.OURS, value=value)
        kind, _, rest = str(held).partition(" ")
        holder = rest.partition(" ")[2]
        if kind == "sending":
            return Claim(ClaimState.SENDING, holder, left_s=max(0, int(left_ms)) / 1000)
        return Claim(ClaimState.SENT, holder)

    def renew(self, alert_key: str, claim: Claim) -> bool:
        """Extend our sending lease; False if another node has taken the key since."""
        return bool(self._renew(keys=[self.key(alert_key)],
                                args=[claim.value, self.sending_ms]))

    def sent(self, alert_key: str, claim: Claim, at: float) -> bool:
        """Mark the alert sent for the dedupe window; False if another node holds it."""
        mark = f"sent {int(at)} {self.node}"
        return bool(self._sent(keys=[self.key(alert_key)],
                               args=[claim.value, mark, self.dedupe_ms]))

    def release(self, alert_key: str, claim: Claim) -> None:
        """Give the key up (nobody received the alert), if it is still ours."""
        self._release(keys=[self.key(alert_key)], args=[claim.value])


__all__ = ["AlertClaims", "Claim", "ClaimState"]
