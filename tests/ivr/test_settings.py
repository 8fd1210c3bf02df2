"""Loading hotline.yaml: the shipped example, interpolation, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.settings import ConfigError, Settings, cluster_problems, load_settings
from trunks.config import TrunkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "hotline.yaml"


def test_example_config_loads_with_its_defaults() -> None:
    settings = load_settings(EXAMPLE, environ={"CARRIER_B_PASSWORD": "s3cret"})
    assert settings.node == "node-1"
    assert settings.redis.url is None, "unset means the embedded redis-server"
    assert settings.data_dir.is_absolute() and settings.data_dir.name == "var"
    a, b = settings.trunks
    assert (a.name, a.mode, a.address, a.probe.interval_s) == (
        "carrier-a", "ip", ("127.0.0.1", 5062), 15.0)
    assert b.mode == "register" and b.password is not None
    assert b.register_expires_s == 300
    assert b.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings), "secrets never show in reprs or logs"


def test_environment_overrides_and_missing_secret() -> None:
    settings = load_settings(EXAMPLE, environ={"CARRIER_B_PASSWORD": "x",
                                               "HOTLINE_REDIS_URL": "redis://10.1.1.1:6379/2",
                                               "HOTLINE_NODE": "edge-2"})
    assert (settings.node, settings.redis.url) == ("edge-2", "redis://10.1.1.1:6379/2")
    with pytest.raises(ConfigError) as caught:
        load_settings(EXAMPLE, environ={})
    line = next(n for n, text in enumerate(EXAMPLE.read_text().splitlines(), 1)
                if "${CARRIER_B_PASSWORD}" in text)
    assert str(caught.value) == (f"{EXAMPLE}: line {line}: trunks[1].password: environment "
                                 "variable CARRIER_B_PASSWORD is not set")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hotline.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("trunks:\n  - name: a\n    mode: ip\n    proxy: 'h:70000'\n",
     "line 4: trunks[0].proxy: port 70000 is out of range 1-65535 (got 'h:70000')"),
    ("trunks:\n  - name: a\n    mode: ip\n    proxy: h\n    probe:\n      intervall_s: 3\n",
     "line 6: trunks[0].probe.intervall_s: unknown key"),
    ("trunks:\n  - name: a\n    mode: register\n    proxy: h\n",
     "line 2: trunks[0]: mode 'register' needs username and password"),
    ("trunks:\n  - {name: a, mode: register, proxy: h, username: u, password: p,\n"
     "     register_expires_s: 0}\n",
     "line 3: trunks[0].register_expires_s: Input should be greater than or equal to 1 (got 0)"),
    ("trunks:\n  - name: a\n    mode: sip\n    proxy: h\n",
     "line 3: trunks[0].mode: Input should be 'register' or 'ip' (got 'sip')"),
    ("trunks:\n  - {name: a, mode: ip, proxy: h}\n  - {name: a, mode: ip, proxy: g}\n",
     "line 1: trunks: trunk names must be unique; repeated: a"),
    ("trunks: []\n", "line 1: trunks: List should have at least 1 item"),
    ("redis: {url: 'http://x'}\ntrunks:\n  - {name: a, mode: ip, proxy: h}\n",
     "line 1: redis.url: expected a redis://, rediss:// or unix:// URL (got 'http://x')"),
    ("trunks: [\n", "line 2, column 1: not valid YAML"),
    ("http:\n  listen: 127.0.0.1:8080\n  twilio:\n    account_sid: AC" + "0" * 32 + "\n"
     "    auth_token: t\n    public_url: https://h.example.com\n    node_url: h-1:443\n"
     "trunks:\n  - {name: a, mode: ip, proxy: h}\n",
     "line 7: http.twilio.node_url: expected http(s)://host[:port][/path], the address "
     "Twilio requests (got 'h-1:443')"),
    ("- a\n- b\n", "expected a mapping of settings at the top level"),
    ("", "expected a mapping of settings at the top level"),
])
def test_bad_config_names_file_line_key_and_expectation(tmp_path: Path, text: str,
                                                        expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}: {expected}")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: LOUD\ntrunks:\n  - {name: A, mode: ip, proxy: h}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).splitlines()[0] == f"{path}: 2 problems:"
    assert "log_level: expected DEBUG, INFO, WARNING or ERROR (got 'LOUD')" in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load_settings(tmp_path / "missing.yaml")


TRUNK = "trunks:\n  - {name: a, mode: ip, proxy: h}\n"


def test_redis_through_sentinels(tmp_path: Path) -> None:
    """Sentinels as one comma-separated string (as an environment variable gives them),
    the port 26379 unless named, passwords from the environment."""
    path = write(tmp_path, "redis:\n  sentinels: ${SENTINELS}\n  master_name: hotline\n"
                 "  password: ${REDIS_PASSWORD}\n" + TRUNK)
    settings = load_settings(path, environ={"SENTINELS": "10.0.0.1, 10.0.0.2:26380",
                                            "REDIS_PASSWORD": "s3cret"})
    redis = settings.redis
    assert redis.url is None and not redis.embedded
    assert redis.sentinels == ("10.0.0.1:26379", "10.0.0.2:26380")
    assert redis.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert redis.master_name == "hotline" and redis.sentinel_password is None
    assert redis.password is not None and redis.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match=r"redis\.master_name is only used with redis\.sentinels"):
        load_settings(path, environ={"SENTINELS": "", "REDIS_PASSWORD": ""})  # not embedded


def test_redis_sentinels_as_a_yaml_list(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  sentinels: [s1:26379, '[::1]', s3]\n  master_name: m\n"
                 "  sentinel_password: ${SENTINEL_PASSWORD}\n" + TRUNK)
    redis = load_settings(path, environ={"SENTINEL_PASSWORD": "pw"}).redis
    assert redis.sentinels == ("s1:26379", "[::1]:26379", "s3:26379")
    assert redis.sentinel_addresses[1] == ("::1", 26379)
    assert redis.sentinel_password is not None
    assert redis.sentinel_password.get_secret_value() == "pw"


@pytest.mark.parametrize(("redis", "expected"), [
    ("{url: 'redis://h:6379/0', sentinels: [s1], master_name: m}",
     "line 1: redis: set redis.url or redis.sentinels, not both"),
    ("{sentinels: [s1, s2]}",
     "line 1: redis: redis.sentinels needs redis.master_name, the name the sentinels "
     "monitor the master by"),
    ("{master_name: m}", "line 1: redis: redis.master_name is only used with redis.sentinels"),
    ("{url: 'redis://h/0', sentinel_password: x}",
     "line 1: redis: redis.sentinel_password is only used with redis.sentinels"),
    ("{password: x}", "line 1: redis: redis.password is for redis.url or redis.sentinels; "
     "the embedded redis-server has none"),
    ("{url: 'redis://:a@h/0', password: b}",
     "line 1: redis: the password is given twice, in redis.url and redis.password"),
    ("{sentinels: ['s1:70000'], master_name: m}",
     "line 1: redis.sentinels: port 70000 is out of range 1-65535"),
    ("{sentinels: [s1], master_name: 'my master'}",
     "line 1: redis.master_name: expected the name Sentinel monitors: letters, digits, '.', "
     "'-' and '_' (got 'my master')"),
])
def test_bad_redis_settings(tmp_path: Path, redis: str, expected: str) -> None:
    path = write(tmp_path, f"redis: {redis}\n{TRUNK}")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == f"{path}: {expected}"


def test_the_example_configs_sentinel_block_is_valid(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # sentinels:"))
    lines[start:start + 4] = [line.replace("# ", "", 1) for line in lines[start:start + 4]]
    path = tmp_path / "hotline.yaml"
    path.write_text("\n".join(lines))
    redis = load_settings(path, environ={"CARRIER_B_PASSWORD": "x", "REDIS_PASSWORD": "a",
                                         "SENTINEL_PASSWORD": "b"}).redis
    assert (redis.url, redis.master_name, len(redis.sentinel_addresses)) == (None, "hotline", 3)
    assert redis.password is not None and redis.sentinel_password is not None


def test_the_example_configs_twilio_block_is_valid(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# http:"))
    lines[start:start + 8] = [line.replace("# ", "", 1) for line in lines[start:start + 8]]
    path = tmp_path / "hotline.yaml"
    path.write_text("\n".join(lines))
    twilio = load_settings(path, environ={
        "CARRIER_B_PASSWORD": "x", "HOTLINE_API_TOKEN": "t" * 16,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "secret"}).http.twilio
    assert twilio is not None
    assert (twilio.public_url, twilio.own_url) == ("https://hotline.example.com",
                                                   "https://hotline-1.example.com")
    assert twilio.model_copy(update={"node_url": None}).own_url == twilio.public_url


@pytest.mark.parametrize(("advertise", "announced"), [
    (None, "0.0.0.0:5072"), ("203.0.113.5", "203.0.113.5:5072"),
    ("203.0.113.5:6000", "203.0.113.5:6000"), ("[2001:db8::5]", "[2001:db8::5]:5072")])
def test_a_trunk_announces_its_advertised_address(advertise: str | None,
                                                  announced: str) -> None:
    trunk = TrunkConfig(name="carrier-a", mode="ip", proxy="203.0.113.7",
                        listen="0.0.0.0:5072", advertise=advertise)
    assert trunk.announced == announced


def test_nodes_with_a_twilio_number_need_the_same_one_and_their_own_urls() -> None:
    def node(name: str, node_url: str | None, token: str = "secret-token") -> Settings:
        return Settings.model_validate({
            "node": name, "redis": {"url": "redis://10.0.0.5:6379/0"},
            "trunks": [{"name": "carrier-a", "mode": "ip", "proxy": "127.0.0.1:5999"}],
            "http": {"listen": "127.0.0.1:8080", "twilio": {
                "account_sid": "AC" + "0" * 32, "auth_token": token,
                "public_url": "https://hotline.example.com", "node_url": node_url}}})

    a, b = Path("a.yaml"), Path("b.yaml")
    assert cluster_problems({a: node("node-a", "https://hotline-1.example.com"),
                             b: node("node-b", None)}) == []
    twice = cluster_problems({a: node("node-a", "https://hotline-1.example.com"),
                              b: node("node-b", "https://hotline-1.example.com")})
    assert twice == ["b.yaml and a.yaml share the Twilio node_url "
                     "https://hotline-1.example.com"]
    other = cluster_problems({a: node("node-a", None), b: node("node-b", None, "another")})
    assert len(other) == 1 and other[0].startswith("the nodes' Twilio numbers differ")
    assert "another" not in other[0] and "secret-token" not in other[0]
