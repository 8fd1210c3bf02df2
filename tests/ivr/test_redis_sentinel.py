"""Redis through Sentinel, against a real master, replica and three sentinels:
`connect()` finds the master, and says clearly when it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli import cli
from ivr.redis_server import RedisUnavailable, connect
from ivr.settings import load_settings
from tests.ivr.conftest import WriteConfig
from tests.redis_sentinel import MASTER_NAME, SentinelRig
from trunks.overrides import OverrideAction
from trunks.store import TrunkStore

PASSWORD, SENTINEL_PASSWORD = "redis-secret", "sentinel-secret"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SentinelRig]:
    """Master, replica and sentinels, with passwords on the servers and the sentinels."""
    rig = SentinelRig(tmp_path / "redis", PASSWORD, SENTINEL_PASSWORD)
    rig.start()
    yield rig
    rig.stop()


def sentinel_config(write_config: WriteConfig, rig: SentinelRig,
                    **redis_settings: object) -> Path:
    """A hotline.yaml whose Redis is `rig`'s master, reached through its sentinels."""
    redis_settings = {"sentinels": rig.addresses, "master_name": MASTER_NAME,
                      "password": PASSWORD, "sentinel_password": SENTINEL_PASSWORD,
                      **redis_settings}
    return write_config({"carrier-a": "127.0.0.1:5999"}, redis=redis_settings)


def test_clients_and_the_cli_reach_the_master_through_the_sentinels(
        rig: SentinelRig, write_config: WriteConfig) -> None:
    config = sentinel_config(write_config, rig)
    settings = load_settings(config)
    with rig.master.client() as master:
        for fail_fast in (False, True):
            with connect(settings, fail_fast) as client:
                client.set(f"written-{fail_fast}", "yes")
                assert master.get(f"written-{fail_fast}") == "yes"
        done = CliRunner().invoke(cli, ["trunks", "drain", "carrier-a", "--reason", "test",
                                        "--config", str(config)])
        assert done.exit_code == 0, done.output
        override = TrunkStore(master).get_override("carrier-a")
        assert override is not None and override.action is OverrideAction.DRAIN


def test_unreachable_redis_is_explained_naming_the_sentinels_and_the_master(
        rig: SentinelRig, write_config: WriteConfig) -> None:
    addresses = ", ".join(rig.addresses)

    def failure(**redis_settings: object) -> str:
        settings = load_settings(sentinel_config(write_config, rig, **redis_settings))
        with pytest.raises(RedisUnavailable) as caught:
            connect(settings, fail_fast=True)
        return str(caught.value)

    assert failure(master_name="elsewhere") == (
        f"cannot reach Redis master 'elsewhere' through the sentinels at {addresses}: the "
        f"sentinels monitor no master named 'elsewhere' (they monitor {MASTER_NAME})")
    refused = failure(sentinel_password="wrong")
    assert refused.startswith(f"cannot reach Redis master '{MASTER_NAME}' through the "
                              f"sentinels at {addresses}: asking the sentinels failed "
                              f"({rig.addresses[0]}: invalid username-password pair")
    assert failure(password="wrong").endswith(": invalid username-password pair or user is "
                                              "disabled.")
    for sentinel in rig.sentinels:
        sentinel.kill()
    silent = failure()
    for address in rig.addresses:
        assert f"{address}: Error 111 connecting to {address}" in silent
