"""``/api/drills``: the reports of the latest trunk-switch drills."""

from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify

from failover.drill.store import DrillStore
from ivr.http.replies import limit


def blueprint(drills: DrillStore) -> Blueprint:
    routes = Blueprint("drills", __name__, url_prefix="/api/drills")

    @routes.get("")
    def drill_list() -> Response:
        return jsonify([json.loads(r.to_json()) for r in drills.reports(limit())])

    return routes


__all__ = ["blueprint"]
