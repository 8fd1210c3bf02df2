"""``/api/nodes``: the live hotline nodes, from their leases in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from flask import Blueprint, Response, jsonify

from ivr.nodes import as_rows, live_nodes


def blueprint(client: redis.Redis, prefix: str,
              wallclock: Callable[[], float] = time.time) -> Blueprint:
    routes = Blueprint("nodes", __name__, url_prefix="/api/nodes")

    @routes.get("")
    def node_list() -> Response:
        return jsonify(as_rows(live_nodes(client, prefix), wallclock()))

    return routes


__all__ = ["blueprint"]
