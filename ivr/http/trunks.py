"""``/api/trunks``: every trunk's health and override, the operators' history, and
drain, force and restore, checked and audited like the CLI's (`ivr.operations`)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from ivr.http.replies import API_BY, body, error_reply, limit
from ivr.operations import NotRunning, check_trunk, new_override, override_json, status_rows
from ivr.operations import history as trunk_history
from ivr.settings import Settings
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

logger = logging.getLogger(__name__)


def blueprint(settings: Settings, trunks: TrunkStore) -> Blueprint:
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


__all__ = ["blueprint"]
