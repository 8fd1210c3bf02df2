"""Failover settings: `failover:` (hold-down, call-backs) and `drill:` in the configuration."""

from __future__ import annotations

import re
import zoneinfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, field_validator

_PHONE = re.compile(r"^\+?[0-9]{2,20}$")


class CallbackSettings(BaseModel):
    """What happens to a caller cut off by a trunk failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Call them back through a healthy trunk; False: open a ticket for staff instead."""
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
    silence_s: float = Field(10.0, gt=0, le=120)
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
        if value in ("", None):
            return None
        text = str(value).replace(" ", "").replace("-", "")
        if not _PHONE.match(text):
            raise ValueError("expected a phone number of digits, optionally starting with +")
        return text

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


__all__ = ["CallbackSettings", "DrillSettings", "FailoverSettings"]
