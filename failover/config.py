"""Failover settings: `failover:` (hold-down, call-backs), `drill:` and `notify:` in the
configuration."""

from __future__ import annotations

import re
import zoneinfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from trunks.validators import check_http_url, empty_is_unset, phone_number

NOTIFY_TIMEOUT_S = 10.0
"""A request to Twilio or the webhook with no answer after this long has failed."""
DEDUPE_S = 900.0
"""An alert key already sent within this many seconds is not sent again."""
RATE_LIMIT = 10
"""Messages per recipient and channel within one rate window; more are skipped."""
RATE_WINDOW_S = 3600.0
"""Length of a rate-limit window (fixed windows, aligned to the epoch)."""
SIGNATURE_HEADER = "X-Hotline-Signature"
_NUMBER = re.compile(r"^\+?[0-9]{3,15}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def check_account_sid(value: str) -> str:
    """A validator body: a Twilio Account SID."""
    if not value:
        raise ValueError("is empty; set it, or leave out the twilio section")
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
        raise ValueError("expected AC followed by 32 hex digits (the Account SID, "
                         "not an API key SK...)")
    return value


def check_api_base(value: object) -> object:
    """A validator body (mode "before"): Twilio's API address, http(s)://host[:port]; an
    empty string is unset."""
    if value == "":
        return None
    if isinstance(value, str) and not re.match(r"^https?://[^/\s]+/?$", value):
        raise ValueError("expected http(s)://host[:port] with no path")
    return value


def check_auth_token(value: SecretStr) -> SecretStr:
    """A validator body: a Twilio auth token, which must not be empty."""
    if not value.get_secret_value():
        raise ValueError("is empty; set it, or leave out the twilio section")
    return value


class CallbackSettings(BaseModel):
    """What happens to a caller cut off by a trunk failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Call them back through a healthy trunk when their trunk had failed; False: open a
    ticket for staff instead."""
    delay_s: float = Field(60.0, ge=0, le=3600)
    """Wait before calling back, so the caller is off the phone and the path has settled."""
    ring_s: float = Field(30.0, gt=0, le=120)
    node: str | None = None
    """The flow node a call-back starts at; unset: the flow's start."""
    numbers: str = r"^\+?[0-9]{6,15}$"
    """Caller numbers that may be called back (a regular expression); others get a ticket.
    Caller IDs can be forged, so keep this to the numbering plan you serve."""
    per_number_s: float = Field(3600.0, ge=0)
    """At most one call-back to the same number within this many seconds."""
    per_hour: int = Field(30, ge=1)
    """At most this many call-backs an hour across all nodes; beyond it, tickets."""
    silence_s: float = Field(30.0, gt=0, le=300)
    """No audio from the caller for this long ends the call as cut off."""

    @field_validator("numbers")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class FailoverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hold_down_s: float = Field(60.0, ge=0, le=3600)
    """A trunk back UP after an outage takes new calls only after this long, unless no
    other trunk is usable, so a flapping carrier does not bounce calls."""
    callback: CallbackSettings = CallbackSettings()


class DrillSettings(BaseModel):
    """The monthly trunk-switch drill (`hotline drill run`, and `schedule` in `serve`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str | None = None
    """The number the drill calls: the hotline's own, which the carrier routes back in.
    Unset: no drills."""
    caller_id: str = Field("hotline-drill", pattern=r"^[A-Za-z0-9+_.-]{1,32}$")
    """Caller ID of drill calls. A call from it to `number` while a drill runs is
    answered by the drill responder instead of the flow."""
    trunk: str | None = None
    """The trunk to prove; unset: the backup (the highest priority number)."""
    calls: int = Field(3, ge=1, le=20)
    ring_s: float = Field(15.0, gt=0, le=60)
    step_s: float = Field(8.0, gt=0, le=60)
    """Longest wait for each check of a call (tone heard, digits echoed)."""
    schedule: str | None = None
    """Cron expression (minute hour day month weekday) for drills inside `hotline serve`,
    e.g. "0 3 1 * *": 03:00 on the 1st of each month. Unset: not scheduled."""
    timezone: str = "UTC"
    lock_s: float = Field(600.0, ge=30, le=7200)
    """Expiry of the cross-node drill lock and of the drill's override: a node that dies
    mid-drill leaves nothing in force for longer than this."""
    keep: int = Field(100, ge=1)
    """Drill reports kept in Redis (the files under data_dir/drills are kept)."""

    @field_validator("number", mode="before")
    @classmethod
    def _phone(cls, value: object) -> object:
        return None if value in ("", None) else phone_number(value)

    @field_validator("schedule", mode="before")
    @classmethod
    def _cron(cls, value: object) -> object:
        if value in ("", None):
            return None
        try:
            CronTrigger.from_crontab(str(value), timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"expected a cron expression such as '0 3 1 * *': {exc}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from exc
        return value

    def trigger(self) -> CronTrigger | None:
        return (None if self.schedule is None
                else CronTrigger.from_crontab(self.schedule, timezone=self.timezone))


class TwilioSettings(BaseModel):
    """The Twilio account that sends SMS and places calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str = Field(description="AC followed by 32 hex digits")
    auth_token: SecretStr
    from_number: str = Field(description="a Twilio number of the account, e.g. +15559990000")
    api_base_url: str | None = Field(None, description="tests and proxies only; unset: "
                                     "https://api.twilio.com")
    timeout_s: float = Field(NOTIFY_TIMEOUT_S, gt=0)

    _sid = field_validator("account_sid")(check_account_sid)
    _token = field_validator("auth_token")(check_auth_token)

    @field_validator("from_number", mode="before")
    @classmethod
    def _check_from(cls, value: object) -> object:
        value = _phone_text(value)
        if not _E164.match(value):
            raise ValueError("expected an E.164 number: '+', country code and number, "
                             "e.g. '+15559990000'")
        return value

    _base = field_validator("api_base_url", mode="before")(check_api_base)


class WebhookSettings(BaseModel):
    """A URL that receives every alert as a JSON POST, signed when `secret` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="unset: no webhook")
    secret: SecretStr | None = Field(None, description=f"signs the body in {SIGNATURE_HEADER}")
    timeout_s: float = Field(NOTIFY_TIMEOUT_S, gt=0)

    _unset = field_validator("url", "secret", mode="before")(empty_is_unset)
    _url = field_validator("url")(check_http_url)


class NotifySettings(BaseModel):
    """Who is told about trunk outages, drills and P1 tickets, and how often at most."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    twilio: TwilioSettings | None = Field(None, description="unset: no SMS or calls")
    sms_to: list[str] = Field([], description="numbers that get every alert by SMS")
    call_to: list[str] = Field([], description="numbers called for urgent alerts")
    webhook: WebhookSettings | None = None
    dedupe_s: float = Field(DEDUPE_S, ge=0)
    rate_limit: int = Field(RATE_LIMIT, ge=1)
    rate_window_s: float = Field(RATE_WINDOW_S, gt=0)

    @field_validator("sms_to", "call_to", mode="before")
    @classmethod
    def _check_numbers(cls, value: object) -> object:
        if not isinstance(value, list):
            return value  # pydantic says what is wrong
        numbers = [_phone_text(v) for v in value if v != ""]
        for number in numbers:
            if not _NUMBER.match(number):
                raise ValueError(f"{number!r} is not a phone number: expected digits with "
                                 "an optional leading '+', e.g. '+15551230001'")
        return list(dict.fromkeys(numbers))

    @model_validator(mode="after")
    def _numbers_need_twilio(self) -> NotifySettings:
        if (self.sms_to or self.call_to) and self.twilio is None:
            raise ValueError("sms_to and call_to need a twilio section to send with")
        return self


def _phone_text(value: object) -> str:
    """A phone number from YAML as text, with spaces and dashes removed."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("put phone numbers in quotes, e.g. '+15551230001': unquoted, "
                         "YAML reads them as numbers and drops the '+'")
    if not isinstance(value, str):
        raise ValueError("expected a phone number in quotes, e.g. '+15551230001'")
    return re.sub(r"[\s().-]", "", value)


__all__ = ["CallbackSettings", "DrillSettings", "FailoverSettings", "NotifySettings",
           "TwilioSettings", "WebhookSettings"]
