"""Fixtures for the application: configuration files written for the test's peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml

from ivr.flow.oncall import load_oncall
from ivr.flow.voicebot import VoiceBot
from ivr.tickets import TicketDesk, build_tickets
from ivr.tickets.config import TicketSettings
from kb.search import Searcher
from speech.engines import create_recognizer
from speech.prompts import PromptCache
from speech.recognizer import SpeechSettings
from speech.synthesizer import EspeakSynthesizer
from tests.conftest import FAST_PROBES
from tests.ivr.tickets.peers import persistent_redis
from tests.peers import RedisServer

EXAMPLE_FLOW = Path(__file__).resolve().parents[2] / "config" / "ivr.yaml"
EXAMPLE_ONCALL = EXAMPLE_FLOW.parent / "oncall.yaml"
EXAMPLE_FAQ = EXAMPLE_FLOW.parent / "faq.yaml"

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
                "oncall": str(EXAMPLE_ONCALL), "kb": {"faq": str(EXAMPLE_FAQ)},
                "trunks": trunks, "redis": {"url": redis_url}, **extra}
        path = tmp_path / "hotline.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def espeak_prompts(tmp_path_factory: pytest.TempPathFactory) -> PromptCache:
    """Prompts by espeak-ng: quick to synthesize, for flows whose audio nobody hears."""
    return PromptCache(tmp_path_factory.mktemp("prompts"), EspeakSynthesizer())


@pytest.fixture
def ticket_desk(redis_client: redis.Redis, tmp_path: Path) -> TicketDesk:
    desk, _ = build_tickets(TicketSettings(), redis_client, prefix="hotline",
                            data_dir=tmp_path, node="node-1")
    return desk


@pytest.fixture
def voicebot(searcher: Searcher, ticket_desk: TicketDesk,
             espeak_prompts: PromptCache) -> VoiceBot:
    """The voice bot of the example flow: the example FAQ, tickets in Redis, Whisper."""
    settings = SpeechSettings(engine="whisper")
    return VoiceBot(searcher, lambda: create_recognizer(settings, Path("unused")), ticket_desk,
                    espeak_prompts, load_oncall(EXAMPLE_ONCALL))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, to stop and start again; its data survive (fsynced AOF)."""
    server = persistent_redis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
