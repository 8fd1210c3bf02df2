"""``/api/trunks``: every trunk's health and override, the operators' history, the
quality of each trunk's recent calls, and drain, force and restore, checked and audited
like the CLI's (`ivr.operations`)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from ivr.http.replies import API_BY, body, error_reply, limit
from ivr.operations import (
    BadRequest,
    NotRunning,
    check_trunk,
    new_override,
    override_json,
    status_rows,
)
from ivr.operations import history as trunk_history
from ivr.quality import RECENT_LEGS, summarize
from ivr.records import QUALITY_KEPT, CallStore
from ivr.settings import Settings
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

logger = logging.getLogger(__name__)


def blueprint(settings: Settings, trunks: TrunkStore, calls: CallStore) -> Blueprint:
    routes = Blueprint("trunks", __name__, url_prefix="/api/trunks")

    @routes.get("")
    def status() -> Response:
        try:
            return jsonify(status_rows(settings, trunks))
        except NotRunning as exc:
            return error_reply(503, str(exc))

    @routes.get("/history")
    def history() -> Response:
        return jsonify(trunk_history(trunks, limit()))

    @routes.get("/quality")
    def quality() -> Response:
        """Each trunk's latest ``?calls=N`` measured call legs (every node's) summed up."""
        names = [t.name for t in settings.trunks]
        legs = calls.trunk_legs(names, _window())
        return jsonify([summarize(name, legs[name]).as_dict() for name in names])

    def set_override(name: str, action: OverrideAction) -> Response:
        given = body()
        override = new_override(settings, name, action, str(given.get("reason") or ""),
                                given.get("expires"), str(given.get("by") or API_BY))
        previous = trunks.set_override(override)
        logger.info("HTTP API: %s %s by %s: %s", action.value, name, override.by,
                    override.reason)
        return jsonify(trunk=name, override=override_json(override),
                       previous=None if previous is None else override_json(previous))

    @routes.post("/<name>/drain")
    def drain(name: str) -> Response:
        return set_override(name, OverrideAction.DRAIN)

    @routes.post("/<name>/force")
    def force(name: str) -> Response:
        return set_override(name, OverrideAction.FORCE)

    @routes.post("/<name>/restore")
    def restore(name: str) -> Response:
        given = body()
        check_trunk(settings, name)
        by, reason = str(given.get("by") or API_BY), str(given.get("reason") or "restored")
        previous = trunks.clear_override(name, by, reason)
        logger.info("HTTP API: restore %s by %s: %s", name, by, reason)
        return jsonify(trunk=name, override=None,
                       previous=None if previous is None else override_json(previous))

    return routes


def _window() -> int:
    """The request's ``?calls=N`` (default `RECENT_LEGS`)."""
    text = request.args.get("calls", str(RECENT_LEGS))
    if not text.isdigit() or not 1 <= int(text) <= QUALITY_KEPT:
        raise BadRequest(f"calls: expected a whole number from 1 to {QUALITY_KEPT}")
    return int(text)


__all__ = ["blueprint"]
