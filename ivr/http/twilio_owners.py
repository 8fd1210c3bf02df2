"""Which node runs each Twilio call, and how the other nodes reach it.

A Twilio call's flow runs in a thread of the node that took its first request
(`ivr.http.twilio`), and nowhere else. That node notes it in Redis, ``{p}:twilio:call:{CallSid}``
(JSON: node, run, the node's URL; kept `KEEP_S`), and gives Twilio its own address
(`http.twilio.node_url`) for every later request of the call. The requests that still
reach another node -- the number's status callback and fallback URL, which go through
the address the nodes share, or every request when the nodes have no address of their
own -- are relayed by that node to the call's (`relay`): POSTed to the owner's HTTP
address from its lease (`ivr.nodes`), signed again as Twilio signs, over the URL
the owner checks, and the owner's answer returned to Twilio as it is. A relayed request
is marked (`RELAYED_HEADER`) and never relayed again.

The owner is `gone` when its lease is no longer held by the run that took the call: the
node died and its lease lapsed, or it was restarted. A relay that gets no answer (no
connection within `CONNECT_S`, or no answer within `RELAY_WAIT_S`) means the same: the
node died within its lease. A node that answers, even with an error, is alive, and its
answer is Twilio's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import redis
import requests
from flask import Response
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from ivr.channels.twilio import BRIDGE_MAX_S, RESPONSE_WAIT_S, Params
from ivr.nodes import http_base, lease_run, node_info
from trunks.bounded import within

logger = logging.getLogger(__name__)

KEEP_S = BRIDGE_MAX_S + 3600
"""How long the owner of a call is kept: longer than a call's flow may wait on Twilio."""
CONNECT_S = 1.0
"""A node that does not accept a relayed request within this long is gone."""
RELAY_WAIT_S = RESPONSE_WAIT_S + 2.0
"""How long a relayed request waits for the owner's answer: the owner answers within
`RESPONSE_WAIT_S`, so this is under Twilio's 15 s."""
RELAYED_HEADER = "X-Hotline-Relayed-By"


@dataclass(frozen=True)
class Owner:
    """The node, and its run, that runs a call's flow, and its URL for Twilio."""

    node: str
    run: str
    url: str


class CallOwners:
    """The owners of Twilio calls in Redis, as seen from node `node` (run `run`, reached by
    Twilio at `url`)."""

    def __init__(self, client: redis.Redis, prefix: str, node: str, run: str, url: str,
                 auth_token: str, wait_s: float = RELAY_WAIT_S) -> None:
        self.client, self.prefix = client, prefix
        self.me = Owner(node, run, url)
        self._validator = RequestValidator(auth_token)
        self._wait_s = wait_s

    def claim(self, sid: str) -> bool:
        """Note that this node runs call `sid`; False when Redis did not take it."""
        client, mine = self.client, json.dumps(asdict(self.me))
        try:
            within(lambda: client.set(self._key(sid), mine, ex=round(KEEP_S)),
                   name="twilio-owner")
        except redis.RedisError as exc:  # TooSlow included
            logger.warning("Twilio call %s: not noted as this node's in Redis (%s); another "
                           "node cannot relay its requests here", sid, exc)
            return False
        return True

    def find(self, sid: str) -> Owner | None:
        """The owner of call `sid`, if it is known."""
        client = self.client
        try:
            text = within(lambda: client.get(self._key(sid)), name="twilio-owner")
        except redis.RedisError as exc:
            logger.warning("Twilio call %s: its node not read from Redis: %s", sid, exc)
            return None
        return None if text is None else Owner(**json.loads(str(text)))

    def gone(self, owner: Owner) -> bool:
        """Whether `owner`'s run no longer holds its node's lease (unknown: not gone)."""
        client = self.client
        try:
            return within(lambda: lease_run(client, self.prefix, owner.node),
                          name="twilio-owner") != owner.run
        except redis.RedisError:
            return False  # the relay finds out

    def relay(self, owner: Owner, path: str, form: Params) -> Response | None:
        """`owner`'s answer to Twilio's request for `path` (with its query) and `form`,
        whatever it is (a node that refuses is alive); None when it gives none (logged)."""
        client = self.client
        try:
            info = within(lambda: node_info(client, self.prefix, owner.node),
                          name="twilio-owner")
        except redis.RedisError as exc:
            logger.warning("Twilio request %s not relayed to node %s: %s", path, owner.node,
                           exc)
            return None
        base = None if info is None else http_base(info)
        if base is None:
            logger.warning("Twilio request %s not relayed: node %s has no HTTP address",
                           path, owner.node)
            return None
        signature = self._validator.compute_signature(owner.url + path, form)
        started = time.monotonic()
        try:
            reply = requests.post(base + path, data=form, timeout=(CONNECT_S, self._wait_s),
                                  allow_redirects=False, headers={
                                      "X-Twilio-Signature": signature,
                                      RELAYED_HEADER: self.me.node})
        except requests.RequestException as exc:
            logger.warning("Twilio request %s not relayed to node %s: %s", path, owner.node,
                           type(exc).__name__)
            return None
        log = logger.info if reply.ok else logger.error  # refused: the same auth token?
        log("Twilio request %s relayed to node %s: HTTP %d in %.2f s", path, owner.node,
            reply.status_code, time.monotonic() - started)
        return Response(reply.content, status=reply.status_code,
                        content_type=reply.headers.get("Content-Type"))

    def _key(self, sid: str) -> str:
        return f"{self.prefix}:twilio:call:{sid}"


__all__ = ["CONNECT_S", "KEEP_S", "RELAYED_HEADER", "CallOwners", "Owner"]
