"""The helpdesk's webhook: one JSON POST per ticket.

Each request carries ``Idempotency-Key: <ticket uid>``, the same on every
attempt, so a helpdesk that took a ticket whose answer never reached us
(a timeout, a dropped connection) recognises the retry. The uid, not the
speakable id, is the key: ids are short and may one day be reused, uids never.
A 409 Conflict is taken as "already have it".
"""

from __future__ import annotations

import datetime
import email.utils
import logging
from typing import Any

import requests

from ivr.tickets.errors import HelpdeskRejected, HelpdeskUnreachable
from ivr.tickets.model import Ticket

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the JSON body, sent as ``schema``; raised when a field changes meaning."""
USER_AGENT = "hotline-tickets/1"
ALREADY_HAVE_IT = 409
_ERROR_TEXT_CHARS = 200


def payload(ticket: Ticket) -> dict[str, Any]:
    """The JSON body for `ticket`: its fields, times in ISO 8601 UTC."""
    data = ticket.to_readable_dict()
    del data["delivery_attempts"], data["delivery_error"], data["delivered_at"]
    return {"schema": SCHEMA_VERSION, **data}


def retry_after_s(header: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, if readable."""
    if not header:
        return None
    if header.strip().isdigit():
        return float(header.strip())
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.datetime.now(datetime.UTC)).total_seconds())


class Helpdesk:
    """Posts tickets to one webhook URL; not thread-safe (the outbox's thread owns it)."""

    def __init__(self, url: str, token: str | None, timeout_s: float,
                 session: requests.Session | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session = session or requests.Session()
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def deliver(self, ticket: Ticket) -> int:
        """POST `ticket`; return the HTTP status, or raise DeliveryFailed."""
        headers = {**self._headers, "Idempotency-Key": ticket.uid}
        try:
            response = self._session.post(self.url, json=payload(ticket), headers=headers,
                                          timeout=self.timeout_s, allow_redirects=False)
        except requests.Timeout as exc:
            raise HelpdeskUnreachable(f"no answer within {self.timeout_s:g} s") from exc
        except requests.RequestException as exc:
            raise HelpdeskUnreachable(_short(exc)) from exc
        with response:
            if 200 <= response.status_code < 300 or response.status_code == ALREADY_HAVE_IT:
                return response.status_code
            detail = f"{response.reason or ''}: {_short(response.text)}".strip(": ")
            raise HelpdeskRejected(response.status_code, detail,
                                   retry_after_s(response.headers.get("Retry-After")))

    def close(self) -> None:
        self._session.close()


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _ERROR_TEXT_CHARS else text[:_ERROR_TEXT_CHARS] + "..."
