"""Fixtures for the application: configuration files written for the test's peers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_PROBES

EXAMPLE_FLOW = Path(__file__).resolve().parents[2] / "config" / "ivr.yaml"
EXAMPLE_ONCALL = EXAMPLE_FLOW.parent / "oncall.yaml"

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a hotline.yaml for the given trunk addresses; returns its path."""

    def write(addresses: dict[str, str], redis_url: str | None = None,
              node: str = "node-1", **extra: object) -> Path:
        trunks = [{"name": name, "mode": "ip", "proxy": address, "priority": i + 1,
                   "probe": FAST_PROBES.model_dump()}
                  for i, (name, address) in enumerate(addresses.items())]
        data = {"node": node, "data_dir": str(tmp_path / "var"), "flow": str(EXAMPLE_FLOW),
                "oncall": str(EXAMPLE_ONCALL),
                "trunks": trunks, "redis": {"url": redis_url}, **extra}
        path = tmp_path / "hotline.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
