"""The server's configuration: one YAML file, validated at start-up.

Strings may name environment variables as ``${NAME}`` or ``${NAME:-default}``;
secrets such as trunk passwords are meant to come in that way. Every problem is
reported as one `ConfigError` naming the file, the line, the key and what was
expected, never as a traceback.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from failover.config import (
    DrillSettings,
    FailoverSettings,
    NotifySettings,
    check_account_sid,
    check_api_base,
    check_auth_token,
)
from ivr.tickets.config import TicketSettings
from speech.recognizer import SpeechSettings
from trunks.config import TrunkConfig, check_hostport, split_hostport
from trunks.validators import empty_is_unset

DEFAULT_CONFIG = Path("config/hotline.yaml")
M = TypeVar("M", bound=BaseModel)
CONFIG_ENV = "HOTLINE_CONFIG"
API_TOKEN_ENV = "HOTLINE_API_TOKEN"
MIN_TOKEN_CHARS = 16
SENTINEL_PORT = 26379
"""Where a sentinel listens when `redis.sentinels` names only its host."""
CUT_OFF_TEXT = ("We are sorry: your call was cut off. We will call you back as soon as we "
                "can.")
"""What a Twilio caller hears when the node running their call is gone."""
_HAS_PORT = re.compile(r":[0-9]+$")
_MASTER_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration file that cannot be used; `str()` is the whole explanation."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(path, problems)
        self.path, self.problems = path, problems

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.path}: {self.problems[0]}"
        return f"{self.path}: {len(self.problems)} problems:\n" + "\n".join(
            f"  {p}" for p in self.problems)


class RedisSettings(BaseModel):
    """Where the shared state lives: one Redis by `url`, a master found through
    `sentinels`, or, with neither, an embedded redis-server under data_dir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="unset: an embedded redis-server under data_dir")
    sentinels: tuple[str, ...] | None = Field(
        None, description="host[:port] of each Sentinel (port 26379 if left out), as a list "
        "or comma-separated; unset or empty: no Sentinel")
    master_name: str | None = Field(None, description="the master the sentinels monitor "
                                    "(`sentinel monitor NAME ...`); required with sentinels")
    password: SecretStr | None = Field(None, description="the Redis servers' password, with "
                                       "url or sentinels")
    sentinel_password: SecretStr | None = Field(None, description="the sentinels' own "
                                                "password (their requirepass), if any")
    prefix: str = "hotline"
    replicas: int = Field(0, ge=0, le=8, description="replicas that must confirm a write "
                          "that matters (a ticket, a call's final record, a call-back) "
                          "before it counts as saved (Redis WAIT); one they do not confirm "
                          "within replica_wait_ms is spooled or retried. 0: the master's "
                          "word; 1 with Sentinel and two or more replicas")
    replica_wait_ms: int = Field(100, ge=1, le=5000, description="how long such a write "
                                 "waits for its replicas")

    _unset = field_validator("url", "master_name", "password", "sentinel_password",
                             mode="before")(empty_is_unset)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value or None

    @field_validator("sentinels")
    @classmethod
    def _check_sentinels(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        addresses = []
        for item in value:
            host, port = split_hostport(item if _HAS_PORT.search(item)
                                        else f"{item}:{SENTINEL_PORT}")
            addresses.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return tuple(addresses)

    @field_validator("master_name")
    @classmethod
    def _check_master_name(cls, value: str | None) -> str | None:
        if value is not None and not _MASTER_NAME.match(value):
            raise ValueError("expected the name Sentinel monitors: letters, digits, '.', '-' "
                             "and '_'")
        return value

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisSettings:
        if self.url is not None and self.sentinels is not None:
            raise ValueError("set redis.url or redis.sentinels, not both")
        if self.sentinels is not None and self.master_name is None:
            raise ValueError("redis.sentinels needs redis.master_name, the name the "
                             "sentinels monitor the master by")
        if self.sentinels is None:
            for key in ("master_name", "sentinel_password"):
                if getattr(self, key) is not None:
                    raise ValueError(f"redis.{key} is only used with redis.sentinels")
        if self.embedded and self.password is not None:
            raise ValueError("redis.password is for redis.url or redis.sentinels; the "
                             "embedded redis-server has none")
        if self.url is not None and self.password is not None and \
                urllib.parse.urlsplit(self.url).password is not None:
            raise ValueError("the password is given twice, in redis.url and redis.password")
        return self

    @property
    def embedded(self) -> bool:
        """Whether `hotline serve` runs a private redis-server (no url, no sentinels)."""
        return self.url is None and self.sentinels is None

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [split_hostport(item) for item in self.sentinels or ()]


class MediaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field("127.0.0.1", description="IP that RTP binds (and SDP announces, "
                         "unless advertise is set)")
    advertise: str | None = Field(None, description="IP that SDP announces, when peers must "
                                  "send RTP to another than address (0.0.0.0, NAT)")
    ports: str = Field("20000-29999", description="low-high: RTP on even ports, RTCP on the next")

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) < 65536):
            raise ValueError("expected a range such as 20000-29999 within 1024-65535")
        return value

    @property
    def port_range(self) -> range:
        low, high = (int(p) for p in self.ports.split("-"))
        return range(low + low % 2, high + 1)


class TwilioVoiceSettings(BaseModel):
    """A hotline number hosted at Twilio, whose calls run the flow through webhooks
    (`ivr.http.twilio`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str = Field(description="AC followed by 32 hex digits")
    auth_token: SecretStr = Field(description="signs every webhook; fetches recordings")
    public_url: str = Field(description="where Twilio reaches the hotline, e.g. "
                            "https://hotline.example.com; webhook signatures are over it")
    node_url: str | None = Field(None, description="where Twilio reaches this node itself, "
                                 "e.g. https://hotline-1.example.com; unset: public_url")
    cut_off_text: str = Field(CUT_OFF_TEXT, min_length=1, description="said to a caller "
                              "whose call's node is gone, before the call ends")
    language: str = Field("en-US", description="what Twilio's speech recognition listens for")
    max_calls: int = Field(20, ge=1, le=500)
    trunk: str = Field("twilio", description="the trunk name in call records")
    api_base_url: str | None = Field(None, description="tests and proxies only; unset: "
                                     "https://api.twilio.com")

    _sid = field_validator("account_sid")(check_account_sid)
    _token = field_validator("auth_token")(check_auth_token)
    _base = field_validator("api_base_url", mode="before")(check_api_base)
    _unset_node = field_validator("node_url", mode="before")(empty_is_unset)

    @field_validator("public_url", "node_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("expected http(s)://host[:port][/path], the address Twilio "
                             "requests")
        return value.rstrip("/")

    @property
    def own_url(self) -> str:
        """Where Twilio reaches this node: `node_url`, else `public_url`."""
        return self.node_url or self.public_url

    @property
    def api_base(self) -> str:
        return (self.api_base_url or "https://api.twilio.com").rstrip("/")


class HttpSettings(BaseModel):
    """The HTTP API (`ivr.http`) that `hotline serve` runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str | None = Field(None, description="host:port; unset: no HTTP API")
    token: SecretStr | None = Field(None, description="bearer token for /api/; unset: "
                                    "$HOTLINE_API_TOKEN")
    threads: int = Field(8, ge=1, le=64)
    twilio: TwilioVoiceSettings | None = Field(None, description="unset: no Twilio number")

    _unset = field_validator("listen", "token", mode="before")(empty_is_unset)

    _listen = field_validator("listen")(check_hostport)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters; generate one "
                             "with `openssl rand -hex 24`")
        return value

    @model_validator(mode="after")
    def _twilio_needs_listen(self) -> HttpSettings:
        if self.twilio is not None and self.listen is None:
            raise ValueError("twilio: Twilio's webhooks need http.listen")
        return self

    def api_token(self, environ: Mapping[str, str]) -> str:
        """The token: `token`, else $HOTLINE_API_TOKEN; raise ValueError if neither."""
        if self.token is not None:
            return self.token.get_secret_value()
        token = environ.get(API_TOKEN_ENV, "")
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"http.listen is set, so the API needs a token of at least "
                             f"{MIN_TOKEN_CHARS} characters: set http.token or "
                             f"${API_TOKEN_ENV}")
        return token


class KbSettings(BaseModel):
    """The FAQ the voice bot answers from, and where its search index is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faq: Path = Field(Path("faq.yaml"), description="the FAQ, relative to this file")
    calibration: Path | None = Field(
        None, description="answer/clarify/none decision from `hotline kb calibrate`; "
        "unset: the one shipped in kb/calibration.json")
    cache_dir: Path | None = Field(
        None, description="search indexes, relative to the working directory like data_dir; "
        "unset: data_dir/kb")


class Settings(BaseModel):
    """The whole of ``hotline.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(default_factory=socket.gethostname)
    data_dir: Path = Path("var")
    log_level: str = "INFO"
    drain_timeout_s: float = Field(300.0, ge=0, description="on SIGTERM or `hotline nodes "
                                   "drain`: how long live calls may go on before they are "
                                   "ended and the node exits")
    flow: Path = Field(Path("ivr.yaml"), description="call flow, relative to this file")
    oncall: Path = Field(Path("oncall.yaml"),
                         description="on-call roster for forward nodes, relative to this file")
    redis: RedisSettings = RedisSettings()
    media: MediaSettings = MediaSettings()
    speech: SpeechSettings = SpeechSettings()
    kb: KbSettings = KbSettings()
    tickets: TicketSettings = TicketSettings()
    failover: FailoverSettings = FailoverSettings()
    drill: DrillSettings = DrillSettings()
    notify: NotifySettings = NotifySettings()
    http: HttpSettings = HttpSettings()
    trunks: list[TrunkConfig] = Field(min_length=1)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("trunks")
    @classmethod
    def _unique_names(cls, value: list[TrunkConfig]) -> list[TrunkConfig]:
        names = [t.name for t in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"trunk names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _drill_trunk(self) -> Settings:
        trunk = self.drill.trunk
        if trunk is not None and self.trunk(trunk) is None:
            raise ValueError(f"drill.trunk: no trunk named {trunk!r}")
        return self

    def trunk(self, name: str) -> TrunkConfig | None:
        return next((t for t in self.trunks if t.name == name), None)

    def drill_trunk(self) -> TrunkConfig:
        """The trunk drills prove: `drill.trunk`, else the backup, the least preferred
        trunk that takes calls."""
        if self.drill.trunk is not None:
            return next(t for t in self.trunks if t.name == self.drill.trunk)
        taking = [t for t in self.trunks if t.listen] or self.trunks
        return max(reversed(taking), key=lambda t: t.priority)


def cluster_problems(nodes: Mapping[Path, Settings]) -> list[str]:
    """What stops the nodes configured by these files (file -> its settings) from making
    one cluster; empty if nothing does. Each node needs the shared Redis (a node with an
    embedded one keeps state nobody else sees), the same Redis as the others, a name of
    its own, and the same trunk names (another node takes a call up on the trunk of the
    same name). The nodes with a Twilio number need the same one (account, auth token,
    public URL: they relay each other's requests, signed with the token) and each its own
    `node_url`, if any (a call's requests must reach its own node)."""
    problems = []
    for path, settings in nodes.items():
        if settings.redis.url is None and settings.redis.sentinels is None:
            problems.append(f"{path}: node {settings.node} has no shared Redis (redis.url or "
                            "redis.sentinels): it would keep its calls, leases and tickets "
                            "in a Redis of its own")
    redis_targets = {(s.redis.url, s.redis.sentinels, s.redis.master_name, s.redis.prefix)
                     for s in nodes.values()}
    if len(redis_targets) > 1:
        problems.append("the nodes name different Redis servers or prefixes: "
                        + "; ".join(f"{p}: {s.redis.url or s.redis.sentinels} "
                                    f"(prefix {s.redis.prefix})" for p, s in nodes.items()))
    named: dict[str, Path] = {}
    for path, settings in nodes.items():
        if settings.node in named:
            problems.append(f"{path} and {named[settings.node]} share the node name "
                            f"{settings.node}")
        named.setdefault(settings.node, path)
    trunk_sets = {path: sorted(t.name for t in s.trunks) for path, s in nodes.items()}
    if len({tuple(names) for names in trunk_sets.values()}) > 1:
        problems.append("the nodes' trunks differ (a call is taken up on the trunk of the "
                        "same name): " + "; ".join(f"{p}: {', '.join(n)}"
                                                   for p, n in trunk_sets.items()))
    return problems + _twilio_problems(nodes)


def _twilio_problems(nodes: Mapping[Path, Settings]) -> list[str]:
    twilio = {path: s.http.twilio for path, s in nodes.items() if s.http.twilio is not None}
    problems = []
    if len({(t.account_sid, t.auth_token.get_secret_value(), t.public_url)
            for t in twilio.values()}) > 1:
        problems.append("the nodes' Twilio numbers differ (account_sid, auth_token or "
                        "public_url): " + "; ".join(f"{p}: {t.account_sid} at {t.public_url}"
                                                    for p, t in twilio.items()))
    urls: dict[str, Path] = {}
    for path, settings in twilio.items():
        if settings.node_url is not None and settings.node_url in urls:
            problems.append(f"{path} and {urls[settings.node_url]} share the Twilio node_url "
                            f"{settings.node_url}")
        if settings.node_url is not None:
            urls.setdefault(settings.node_url, path)
    return problems


def check_timezone(value: str) -> str:
    """A validator body: `value` must name an IANA time zone."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from exc
    return value


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file to load: `explicit`, else $HOTLINE_CONFIG, else config/hotline.yaml."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate `path`; raise ConfigError on any problem."""
    settings = load_yaml(path, Settings, environ)
    data_dir = Path.cwd() / settings.data_dir
    kb = settings.kb
    kb = kb.model_copy(update={
        "faq": path.parent / kb.faq,
        "calibration": path.parent / kb.calibration if kb.calibration else None,
        "cache_dir": Path.cwd() / kb.cache_dir if kb.cache_dir else data_dir / "kb"})
    return settings.model_copy(update={"data_dir": data_dir,
                                       "flow": path.parent / settings.flow,
                                       "oncall": path.parent / settings.oncall,
                                       "kb": kb})


def load_yaml(path: Path, model: type[M], environ: Mapping[str, str] | None = None,
              context: dict[str, Any] | None = None) -> M:
    """Read YAML, interpolate ${VAR}s and validate it as `model` (with validation
    `context`); raise ConfigError naming the file, line and key of every problem."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from exc
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [f"{where}not valid YAML: {exc.problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from exc
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(path, ["expected a mapping of settings at the top level"])
    problems: list[str] = []
    data = _to_data(root, (), environ, problems)
    if problems:
        raise ConfigError(path, problems)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(error, root) for error in exc.errors()]) from None


def _to_data(node: yaml.Node, where: tuple[str | int, ...], environ: Mapping[str, str],
             problems: list[str]) -> Any:
    """Turn a YAML node into plain data, interpolating ${VAR} in strings."""
    if isinstance(node, yaml.MappingNode):
        return {key.value: _to_data(value, (*where, key.value), environ, problems)
                for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*where, i), environ, problems) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, str) and "${" in value:
        def substitute(match: re.Match[str]) -> str:
            name, default = match[1], match[2]
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"line {node.start_mark.line + 1}: {_dotted(where)}: environment "
                            f"variable {name} is not set")
            return ""
        return _ENV_REF.sub(substitute, value)
    return value


def _describe(error: Any, root: yaml.Node) -> str:
    where = tuple(error["loc"])
    line = _line_of(root, where)
    prefix = f"line {line}: " if line else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against config/README.md)"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message += f" (got {error['input']!r})"
    return f"{prefix}{_dotted(where) or '(top level)'}: {message}"


def _line_of(node: yaml.Node, where: tuple[Any, ...]) -> int | None:
    for i, part in enumerate(where):
        if isinstance(node, yaml.MappingNode):
            last = i == len(where) - 1  # point at the key itself, not at its value
            found = next((k if last else v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and \
                part < len(node.value):
            found = node.value[part]
        else:
            found = None
        if found is None:
            break
        node = found
    return int(node.start_mark.line) + 1


def _dotted(where: tuple[Any, ...]) -> str:
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
