"""The HTTP API: hotline state as JSON for operators and monitoring, behind a bearer token.

`create_app` builds the Flask app; `hotline serve` runs it under waitress on
`http.listen`. Every ``/api/`` route needs ``Authorization: Bearer <http.token>``
(401 otherwise, compared in constant time); ``/healthz`` (the process answers) and
``/readyz`` (Redis answers and some trunk can take calls) need none, for load
balancers and orchestrators. Trunk actions go through `ivr.operations`, like the
CLI's, so they are checked and audited the same way. Errors are JSON:
``{"error": "..."}``.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from failover.drill import DrillStore
from ivr import dashboard
from ivr.metrics import metrics_response
from ivr.operations import (
    BadRequest,
    NotRunning,
    check_trunk,
    new_override,
    override_json,
    status_rows,
)
from ivr.operations import history as trunk_history
from ivr.records import CallStore
from ivr.settings import Settings
from ivr.tickets.model import TicketStatus
from ivr.tickets.store import TicketStore
from trunks.errors import UnknownTrunk
from trunks.health import TrunkState
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

if TYPE_CHECKING:
    from ivr.twilio_voice import TwilioVoice

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
READY_STATES = frozenset({TrunkState.UP, TrunkState.SUSPECT})
"""Trunk states that make the hotline ready: usable, and seen to answer."""
API_BY = "api"
"""Who an action is by when the request does not say."""
ACTIVE_MAX_S = 6 * 3600
"""`?active=true` leaves out unfinished calls older than this: their node died mid-call."""


def create_app(settings: Settings, client: redis.Redis, token: str,
               twilio: TwilioVoice | None = None,
               metrics: CollectorRegistry | None = None) -> Flask:
    """The app for `settings`, reading and writing state in `client`'s Redis; with
    `twilio`, also the webhooks of a Twilio number (which check their own signatures);
    with `metrics`, /metrics for Prometheus (behind the token, like /api/)."""
    if not token:
        raise ValueError("the HTTP API needs a token")
    prefix = settings.redis.prefix
    trunks, calls = TrunkStore(client, prefix), CallStore(client, prefix)
    tickets, drills = TicketStore(client, prefix), DrillStore(client, prefix)
    app = Flask("hotline", static_folder=None)  # the dashboard serves its own files
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.before_request
    def _authenticate() -> Response | None:
        if not (request.path.startswith("/api/") or request.path == "/metrics"):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            response = _error(401, "a bearer token is required (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="hotline"'
            return response
        return None

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", node=settings.node)

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            client.ping()
            rows = status_rows(settings, trunks)
        except redis.RedisError:
            return _json(503, {"ready": False, "redis": False, "usable_trunks": []})
        except NotRunning:
            rows = []
        usable = sorted({r["name"] for r in rows if TrunkState(r["state"]) in READY_STATES
                         and (r["override"] or {}).get("action") != OverrideAction.DRAIN})
        return _json(200 if usable else 503,
                     {"ready": bool(usable), "redis": True, "usable_trunks": usable})

    @app.get("/api/trunks")
    def trunk_status() -> Response:
        try:
            return jsonify(status_rows(settings, trunks))
        except NotRunning as exc:
            return _error(503, str(exc))

    @app.get("/api/trunks/history")
    def history() -> Response:
        return jsonify(trunk_history(trunks, _limit()))

    def set_override(name: str, action: OverrideAction) -> Response:
        body = _body()
        override = new_override(settings, name, action, str(body.get("reason") or ""),
                                body.get("expires"), str(body.get("by") or API_BY))
        previous = trunks.set_override(override)
        logger.info("HTTP API: %s %s by %s: %s", action.value, name, override.by,
                    override.reason)
        return jsonify(trunk=name, override=override_json(override),
                       previous=None if previous is None else override_json(previous))

    @app.post("/api/trunks/<name>/drain")
    def drain(name: str) -> Response:
        return set_override(name, OverrideAction.DRAIN)

    @app.post("/api/trunks/<name>/force")
    def force(name: str) -> Response:
        return set_override(name, OverrideAction.FORCE)

    @app.post("/api/trunks/<name>/restore")
    def restore(name: str) -> Response:
        body = _body()
        check_trunk(settings, name)
        by, reason = str(body.get("by") or API_BY), str(body.get("reason") or "restored")
        previous = trunks.clear_override(name, by, reason)
        logger.info("HTTP API: restore %s by %s: %s", name, by, reason)
        return jsonify(trunk=name, override=None,
                       previous=None if previous is None else override_json(previous))

    @app.get("/api/calls")
    def call_list() -> Response:
        limit, active = _limit(), request.args.get("active")
        if active is None:
            records = calls.recent(limit)
        elif active == "true":
            records = [r for r in calls.since(time.time() - ACTIVE_MAX_S)
                       if r.ended_at is None][:limit]
        else:
            raise BadRequest("active: expected true, or leave it out for every call")
        return jsonify([dataclasses.asdict(r) for r in records])

    @app.get("/api/calls/<call_id>")
    def call(call_id: str) -> Response:
        record = calls.get(call_id)
        return _error(404, f"no call {call_id!r}") if record is None else \
            jsonify(dataclasses.asdict(record))

    @app.get("/api/tickets")
    def ticket_list() -> Response:
        status = request.args.get("status")
        try:
            wanted = None if status is None else TicketStatus(status)
        except ValueError:
            raise BadRequest(f"status: expected one of "
                             f"{', '.join(s.value for s in TicketStatus)}") from None
        return jsonify([t.to_dict() for t in tickets.tickets(wanted, _limit())])

    @app.get("/api/drills")
    def drill_list() -> Response:
        return jsonify([json.loads(r.to_json()) for r in drills.reports(_limit())])

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return _error(400, str(exc))

    @app.errorhandler(UnknownTrunk)
    def unknown_trunk(exc: UnknownTrunk) -> Response:
        return _error(404, str(exc))

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        logger.warning("HTTP API: Redis failed: %s", exc)
        return _error(503, "Redis is unreachable; nothing was changed")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    if metrics is not None:
        registry = metrics
        app.add_url_rule("/metrics", "metrics", lambda: metrics_response(registry))
    dashboard.register(app)
    if twilio is not None:
        app.register_blueprint(twilio.blueprint())
    return app


def _limit() -> int:
    text = request.args.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _body() -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty object)."""
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    return body


def _json(status: int, data: Any) -> Response:
    response = jsonify(data)
    response.status_code = status
    return response


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


