"""Which node answers a call that a forking registrar sent to several nodes.

A `register` trunk registers each node's own Contact under the one AOR, so a carrier
that forks in parallel sends every node a branch of the same INVITE (the same Call-ID).
Before answering such a call, a node claims it in Redis (``SET NX`` with its name,
waiting at most `wait_s`): the first claim wins and answers; a node that finds the
call claimed declines its branch, and the carrier's proxy, holding that final response
while another branch may still answer 2xx (RFC 3261 16.7), passes on the winner's 200
alone. When Redis cannot say within `wait_s`, the node answers: the caller may then be
answered twice, which is better than not at all.

`ip` trunks take no claims: a front door that retries a dead node's INVITE on another
node keeps its Call-ID, and that retry must be answered.

Keys: ``{p}:answer:{Call-ID}`` (string: the answering node's name; expiring).
"""

from __future__ import annotations

import logging

import redis

from trunks.bounded import WAIT_S, within
from trunks.voip.message import shorten

logger = logging.getLogger(__name__)

CLAIM_S = 32.0
"""How long a claim is kept: as long as a branch of the INVITE may still arrive (RFC 3261
Timer B, 64 x T1)."""
DECLINE = (480, "Temporarily Unavailable")
"""What a node that lost the claim answers its branch. A 4xx is held by the forking
proxy and dropped once the winner's 200 comes (RFC 3261 16.7 steps 5-6); a 6xx would
make it cancel every branch, the winner's too. Of the 4xx, 480 says what is true when
the winner fails after all ("unavailable now, try later") without 486's "busy", which
carriers may act on (call forwarding on busy)."""


class AnswerClaims:
    """This node's claims on calls to answer, in Redis; thread-safe."""

    def __init__(self, client: redis.Redis, prefix: str, node: str, *,
                 claim_s: float = CLAIM_S, wait_s: float = WAIT_S) -> None:
        self.client, self.prefix, self.node = client, prefix, node
        self.claim_s, self.wait_s = claim_s, wait_s

    def claim(self, call_id: str) -> str | None:
        """Claim the call `call_id` for this node: None if this node is to answer it
        (claimed now, or before; or Redis cannot say within `wait_s`), else the name of
        the node that claimed it first."""
        try:
            holder = within(lambda: self._claim(call_id), self.wait_s, "answer-claim")
        except redis.RedisError as exc:
            logger.warning("Call %s: answering without a claim, Redis unreachable (%s); "
                           "another node may answer it too", shorten(call_id), exc)
            return None
        return None if holder in (None, self.node) else holder

    def _claim(self, call_id: str) -> str | None:
        key = f"{self.prefix}:answer:{call_id}"
        if self.client.set(key, self.node, px=int(self.claim_s * 1000), nx=True):
            return self.node
        holder = self.client.get(key)  # None: the claim lapsed in between; ours to answer
        return None if holder is None else str(holder)


__all__ = ["CLAIM_S", "DECLINE", "AnswerClaims"]
