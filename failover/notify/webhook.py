"""The signed JSON webhook: its body and its HMAC signature.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from typing import Any

from failover.notify.alert import Alert

TIMESTAMP_HEADER = "X-Hotline-Timestamp"
USER_AGENT = "hotline-notify/1"


def payload(alert: Alert, at: float, node: str | None) -> dict[str, Any]:
    """The webhook's JSON body for `alert`, raised at `at` (epoch seconds) on `node`."""
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    body = {"kind": alert.kind.value, "key": alert.key, "text": alert.text,
            "urgent": alert.urgent, "details": alert.details,
            "at": moment.isoformat(timespec="milliseconds")}
    return body if node is None else {**body, "node": node}


def signature(timestamp: str, body: bytes, secret: str) -> str:
    """The value of the signature header: ``sha256=`` and the hex HMAC-SHA256 of the
    timestamp header's value, a dot and `body`; a receiver that also checks the timestamp
    is recent cannot be fooled by a replayed request."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


__all__ = ["TIMESTAMP_HEADER", "USER_AGENT", "payload", "signature"]
