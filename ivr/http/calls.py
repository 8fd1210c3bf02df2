"""``/api/calls``: recent call records (``?active=true``: the calls still up), and one
call's record in full."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request

from ivr.http.replies import error_reply, limit
from ivr.operations import BadRequest
from ivr.records import CallStore

ACTIVE_MAX_S = 6 * 3600
"""`?active=true` leaves out unfinished calls older than this: their node died mid-call."""


def blueprint(calls: CallStore, wallclock: Callable[[], float] = time.time) -> Blueprint:
    routes = Blueprint("calls", __name__, url_prefix="/api/calls")

    @routes.get("")
    def call_list() -> Response:
        count, active = limit(), request.args.get("active")
        if active is None:
            records = calls.recent(count)
        elif active == "true":
            records = [r for r in calls.since(wallclock() - ACTIVE_MAX_S)
                       if r.ended_at is None][:count]
        else:
            raise BadRequest("active: expected true, or leave it out for every call")
        return jsonify([dataclasses.asdict(r) for r in records])

    @routes.get("/<call_id>")
    def call(call_id: str) -> Response:
        record = calls.get(call_id)
        return error_reply(404, f"no call {call_id!r}") if record is None else \
            jsonify(dataclasses.asdict(record))

    return routes


__all__ = ["ACTIVE_MAX_S", "blueprint"]
