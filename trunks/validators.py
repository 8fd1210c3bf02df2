"""Validators for configuration values that every package's settings share: phone
numbers, http(s) URLs, and empty strings that mean "unset".

Each is a validator body for pydantic (`field_validator(...)(phone_number)`): it
returns the value, cleaned, or raises ValueError with what was expected. They live in
`trunks`, the lowest layer, so `failover` and `ivr` both reach them.
"""

from __future__ import annotations

import re

_PHONE = re.compile(r"^\+?[0-9]{2,20}$")


def phone_number(value: object) -> str:
    """A validator body (mode "before"): a number to dial, digits with an optional
    leading +, as text with spaces and dashes removed."""
    text = str(value).replace(" ", "").replace("-", "") if isinstance(value, str | int) \
        else value
    if not isinstance(text, str) or not _PHONE.match(text):
        raise ValueError("expected a phone number of digits, optionally starting with +")
    return text


def empty_is_unset(value: object) -> object:
    """A validator body (mode "before"): an empty string, as ``${VAR:-}`` gives, is unset."""
    return None if value == "" else value


def check_http_url(value: str | None) -> str | None:
    """A validator body: `value`, if set, must be an http:// or https:// URL."""
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value


__all__ = ["check_http_url", "empty_is_unset", "phone_number"]
