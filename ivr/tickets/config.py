"""Ticket settings as they appear under ``tickets:`` in the configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ivr.tickets.model import Priority
from trunks.validators import check_http_url, empty_is_unset

HELPDESK_TIMEOUT_S = 10.0
"""A POST to the helpdesk with no answer after this long has failed."""
RETRY_BASE_S = 5.0
"""Wait before the second delivery attempt; it doubles with each failure."""
RETRY_MAX_S = 900.0
"""Longest wait between delivery attempts; attempts go on until the helpdesk takes it."""
DEFAULT_SPOOL = Path("tickets/spool.jsonl")
"""Where tickets wait while Redis is unreachable, relative to data_dir."""


class HelpdeskSettings(BaseModel):
    """The helpdesk's webhook that receives every ticket as a JSON POST."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="unset: tickets stay in Redis only")
    token: SecretStr | None = Field(None, description="sent as 'Authorization: Bearer ...'")
    timeout_s: float = Field(HELPDESK_TIMEOUT_S, gt=0)
    retry_base_s: float = Field(RETRY_BASE_S, gt=0)
    retry_max_s: float = Field(RETRY_MAX_S, gt=0)

    _unset = field_validator("url", "token", mode="before")(empty_is_unset)
    _url = field_validator("url")(check_http_url)

    @model_validator(mode="after")
    def _base_within_max(self) -> HelpdeskSettings:
        if self.retry_base_s > self.retry_max_s:
            raise ValueError("retry_base_s must not be longer than retry_max_s")
        return self


class SlaHours(BaseModel):
    """Hours from opening to the SLA due time, per priority (wall-clock hours)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    P1: float = Field(4.0, gt=0)
    P2: float = Field(8.0, gt=0)
    P3: float = Field(24.0, gt=0)
    P4: float = Field(72.0, gt=0)

    @model_validator(mode="after")
    def _urgent_is_sooner(self) -> SlaHours:
        if not self.P1 <= self.P2 <= self.P3 <= self.P4:
            raise ValueError("hours must not decrease from P1 to P4")
        return self

    def hours(self, priority: Priority) -> float:
        return float(getattr(self, priority.value))


class TicketSettings(BaseModel):
    """Tickets opened when the voice bot cannot help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    helpdesk: HelpdeskSettings = HelpdeskSettings()
    sla_hours: SlaHours = SlaHours()
    default_priority: Priority = Field(
        Priority.P3, description="when the best FAQ candidate has no priority of its own")
    spool: Path | None = Field(None, description=f"unset: <data_dir>/{DEFAULT_SPOOL}")

    def spool_path(self, data_dir: Path) -> Path:
        """The spool file; a relative `spool` setting is taken relative to `data_dir`."""
        return data_dir / (self.spool or DEFAULT_SPOOL)
