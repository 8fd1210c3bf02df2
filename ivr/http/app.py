"""The HTTP app of `hotline serve`: the JSON API, /metrics, the dashboard and the
Twilio webhooks, one Flask app served by waitress on `http.listen`.

Every ``/api/`` route and ``/metrics`` need ``Authorization: Bearer <http.token>``
(401 otherwise, compared in constant time); ``/healthz`` and ``/readyz`` need none.
The API is one blueprint per resource: `health`, `trunks`, `calls`, `tickets`,
`drills`. Trunk actions go through `ivr.operations`, like the CLI's, so they are
checked and audited the same way. Errors are JSON: ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from flask import Flask, Response, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from failover.drill.store import DrillStore
from ivr.http import calls, dashboard, drills, health, nodes, tickets, trunks
from ivr.http.replies import error_reply
from ivr.metrics import metrics_response
from ivr.operations import BadRequest
from ivr.records import CallStore
from ivr.settings import Settings
from ivr.tickets.store import TicketStore
from trunks.errors import UnknownTrunk
from trunks.store import TrunkStore

if TYPE_CHECKING:
    from ivr.http.twilio import TwilioVoice

logger = logging.getLogger(__name__)


def create_app(settings: Settings, client: redis.Redis, token: str,
               twilio: TwilioVoice | None = None,
               metrics: CollectorRegistry | None = None) -> Flask:
    """The app for `settings`, reading and writing state in `client`'s Redis; with
    `twilio`, also the webhooks of a Twilio number (which check their own signatures);
    with `metrics`, /metrics for Prometheus (behind the token, like /api/)."""
    if not token:
        raise ValueError("the HTTP API needs a token")
    prefix = settings.redis.prefix
    trunk_store = TrunkStore(client, prefix)
    call_store = CallStore(client, prefix)
    app = Flask("hotline", static_folder=None)  # the dashboard serves its own files
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.before_request(_authenticator(token))
    app.register_blueprint(health.blueprint(settings, client, trunk_store))
    app.register_blueprint(trunks.blueprint(settings, trunk_store, call_store))
    app.register_blueprint(calls.blueprint(call_store))
    app.register_blueprint(tickets.blueprint(TicketStore(client, prefix)))
    app.register_blueprint(drills.blueprint(DrillStore(client, prefix)))
    app.register_blueprint(nodes.blueprint(client, prefix))
    _register_errors(app)
    if metrics is not None:
        registry = metrics
        app.add_url_rule("/metrics", "metrics", lambda: metrics_response(registry))
    dashboard.register(app)
    if twilio is not None:
        app.register_blueprint(twilio.blueprint())
    return app


def _authenticator(token: str) -> Callable[[], Response | None]:
    """The check before every request: /api/ and /metrics need the bearer token."""

    def authenticate() -> Response | None:
        if not (request.path.startswith("/api/") or request.path == "/metrics"):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            response = error_reply(401, "a bearer token is required (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="hotline"'
            return response
        return None

    return authenticate


def _register_errors(app: Flask) -> None:
    """Every error as JSON: bad requests 400, unknown trunks 404, Redis down 503."""

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return error_reply(400, str(exc))

    @app.errorhandler(UnknownTrunk)
    def unknown_trunk(exc: UnknownTrunk) -> Response:
        return error_reply(404, str(exc))

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        logger.warning("HTTP API: Redis failed: %s", exc)
        return error_reply(503, "Redis is unreachable; nothing was changed")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_reply(exc.code or 500, exc.description or exc.name)


__all__ = ["create_app"]
