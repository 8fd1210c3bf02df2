"""``/healthz`` (the process answers) and ``/readyz`` (Redis answers and some trunk can
take calls): no token, for load balancers and orchestrators."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from ivr.http.replies import json_reply
from ivr.operations import NotRunning, status_rows
from ivr.settings import Settings
from trunks.health import TrunkState
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

READY_STATES = frozenset({TrunkState.UP, TrunkState.SUSPECT})
"""Trunk states that make the hotline ready: usable, and seen to answer."""


def blueprint(settings: Settings, client: redis.Redis, trunks: TrunkStore) -> Blueprint:
    routes = Blueprint("health", __name__)

    @routes.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", node=settings.node)

    @routes.get("/readyz")
    def readyz() -> Response:
        try:
            client.ping()
            rows = status_rows(settings, trunks)
        except redis.RedisError:
            return json_reply(503, {"ready": False, "redis": False, "usable_trunks": []})
        except NotRunning:
            rows = []
        usable = sorted({r["name"] for r in rows if TrunkState(r["state"]) in READY_STATES
                         and (r["override"] or {}).get("action") != OverrideAction.DRAIN})
        return json_reply(200 if usable else 503,
                          {"ready": bool(usable), "redis": True, "usable_trunks": usable})

    return routes


__all__ = ["READY_STATES", "blueprint"]
