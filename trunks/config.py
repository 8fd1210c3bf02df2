"""Trunk settings as they appear under ``trunks:`` in the configuration."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

PROBE_INTERVAL_S = 15.0
"""Steady-state OPTIONS interval: carriers tolerate about one per 10-15 s."""
FAST_INTERVAL_S = 0.5
"""Interval of confirmation probes after a suspicious signal, and while recovering."""
DOWN_INTERVAL_S = 5.0
"""Interval of probes to a trunk that is down, watching for its return."""
PROBE_TIMEOUT_S = 1.0
"""A probe with no response after this long has failed."""
RETRANSMIT_S = 0.5
"""RFC 3261 T1: an unanswered OPTIONS is sent again after this long."""
DOWN_AFTER = 3
"""Consecutive failed probes that declare a trunk DOWN."""
UP_AFTER = 3
"""Consecutive good probes that bring a DOWN trunk back UP."""

DEFAULT_SIP_PORT = 5060
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_hostport(value: str | None) -> str | None:
    """A validator body: `value`, if set, must be ``host[:port]``."""
    if value is not None:
        split_hostport(value)
    return value


class ProbeSettings(BaseModel):
    """How one trunk is probed and when its health changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(PROBE_INTERVAL_S, gt=0)
    fast_interval_s: float = Field(FAST_INTERVAL_S, gt=0)
    down_interval_s: float = Field(DOWN_INTERVAL_S, gt=0)
    timeout_s: float = Field(PROBE_TIMEOUT_S, gt=0)
    retransmit_s: float = Field(RETRANSMIT_S, gt=0)
    down_after: int = Field(DOWN_AFTER, ge=1)
    up_after: int = Field(UP_AFTER, ge=1)

    @model_validator(mode="after")
    def _fast_is_faster(self) -> ProbeSettings:
        if self.fast_interval_s > self.interval_s:
            raise ValueError("fast_interval_s must not be longer than interval_s")
        return self


class TrunkConfig(BaseModel):
    """One SIP trunk to a carrier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    priority: int = Field(1, ge=1, description="lower is preferred")
    weight: int = Field(100, ge=1, description="share among trunks of equal priority")
    mode: Literal["register", "ip"]
    proxy: str = Field(description="carrier's SIP proxy as host or host:port")
    transport: Literal["udp"] = "udp"
    username: str | None = None
    password: SecretStr | None = None
    domain: str | None = None
    listen: str | None = Field(None, description="our SIP address for this trunk, host:port; "
                               "unset: the trunk is monitored but takes no calls")
    advertise: str | None = Field(None, description="the address our Via and Contact "
                                  "headers announce, host[:port] (port: listen's), when "
                                  "peers must reach us at another than listen (0.0.0.0, "
                                  "NAT); unset: listen")
    addresses: list[str] = Field([], description="source IPs besides the proxy's that may "
                                 "send calls in")
    symmetric_rtp: bool = Field(True, description="send each call's RTP to where the "
                                "peer's RTP comes from, not only to its SDP address (for "
                                "peers behind NAT)")
    probe: ProbeSettings = ProbeSettings()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("expected lower-case letters, digits, '.', '_' or '-' "
                             "(at most 63, starting with a letter or digit)")
        return value

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str) -> str:
        split_hostport(value)
        return value

    _listen = field_validator("listen", "advertise")(check_hostport)

    @property
    def announced(self) -> str | None:
        """Where peers reach this trunk's SIP: `advertise` (with listen's port if it has
        none), else `listen`."""
        if self.advertise is None or self.listen is None:
            return self.listen
        host, port = split_hostport(self.advertise)
        if ":" not in self.advertise.rsplit("]", 1)[-1]:
            port = split_hostport(self.listen)[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @model_validator(mode="after")
    def _register_needs_credentials(self) -> TrunkConfig:
        if self.mode == "register" and not (self.username and self.password):
            raise ValueError("mode 'register' needs username and password")
        return self

    @property
    def address(self) -> tuple[str, int]:
        """The proxy as (host, port)."""
        return split_hostport(self.proxy)

    @property
    def sip_domain(self) -> str:
        return self.domain or self.address[0]


def split_hostport(value: str) -> tuple[str, int]:
    """Split ``host[:port]`` (IPv6 in brackets); raise ValueError if malformed."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([A-Za-z0-9.-]+)(?::(\d+))?", value)
    if match is None:
        raise ValueError(f"expected host or host:port, got {value!r}")
    host = match[1] or match[3]
    port = int(match[2] or match[4] or DEFAULT_SIP_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port
