"""What every API blueprint shares: JSON replies and errors, the `limit` argument and
the request's JSON body."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from ivr.operations import BadRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
API_BY = "api"
"""Who an action is by when the request does not say."""


def limit() -> int:
    """The request's ``?limit=N`` (default `DEFAULT_LIMIT`)."""
    text = request.args.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def body() -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty object)."""
    if not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object body")
    return data


def json_reply(status: int, data: Any) -> Response:
    response = jsonify(data)
    response.status_code = status
    return response


def error_reply(status: int, message: str) -> Response:
    return json_reply(status, {"error": message})


__all__ = ["API_BY", "DEFAULT_LIMIT", "MAX_LIMIT", "body", "error_reply", "json_reply",
           "limit"]
