"""The audio Twilio plays: keys that every node of the account agrees on, copies shared
through a real Redis, and a node whose Redis is away still serving its own audio."""

from __future__ import annotations

import time

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.channels.twilio_audio import AudioStore, audio_secret
from tests.peers import RedisServer, free_udp_port
from tests.twilio_fake import AUTH_TOKEN


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    """A stand-in for a prompt: a tone at 8 kHz."""
    t = np.arange(int(8000 * seconds)) / 8000
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_nodes_of_one_account_give_a_prompt_the_same_key_and_serve_each_others(
        redis_client: redis.Redis) -> None:
    samples = tone(440)
    node_a = AudioStore(audio_secret(AUTH_TOKEN), redis_client)
    node_b = AudioStore(audio_secret(AUTH_TOKEN), redis_client)
    key = node_a.add(samples)
    assert node_a.shared(key)
    assert node_b.get(key) == node_a.get(key)  # from Redis, then from its own memory
    assert node_b.add(samples) == key
    other_account = AudioStore(audio_secret("another-auth-token"), redis_client)
    assert other_account.add(samples) != key
    assert redis_client.ttl(f"hotline:twilio:audio:{key}") > 3000


def test_audio_redis_did_not_take_is_served_by_its_node_only() -> None:
    away = redis.Redis(port=free_udp_port(), retry=Retry(NoBackoff(), 0))  # refused at once
    alone = AudioStore(audio_secret(AUTH_TOKEN), away)
    key = alone.add(tone(480))
    assert not alone.shared(key)
    assert alone.get(key) is not None and alone.get("0" * 32) is None
    away.close()


def test_a_hung_redis_costs_one_wait_then_sharing_pauses(own_redis: RedisServer) -> None:
    client = redis.Redis(unix_socket_path=str(own_redis.socket), socket_timeout=2.0)
    now = [0.0]
    store = AudioStore(audio_secret(AUTH_TOKEN), client, retry_s=10.0, clock=lambda: now[0])
    own_redis.pause()
    try:
        started = time.monotonic()
        keys = [store.add(tone(hz)) for hz in (350, 440, 480)]
        assert time.monotonic() - started < 0.5, "one bounded wait (0.2 s), not three"
        assert not any(store.shared(key) for key in keys)
    finally:
        own_redis.resume()
    now[0] = 9.0
    assert not store.shared(store.add(tone(350))), "not tried again so soon"
    now[0] = 10.0
    assert store.shared(store.add(tone(350)))
    client.close()


def test_a_prompt_played_again_is_shared_again_before_its_copy_expires(
        redis_client: redis.Redis) -> None:
    now = [0.0]
    store = AudioStore(audio_secret(AUTH_TOKEN), redis_client, shared_s=100.0,
                       clock=lambda: now[0])
    samples = tone(620)
    key = store.add(samples)
    redis_client.delete(f"hotline:twilio:audio:{key}")
    now[0] = 49.0
    assert store.add(samples) == key and store.shared(key)
    assert not redis_client.exists(f"hotline:twilio:audio:{key}"), "shared 49 s ago: enough"
    now[0] = 50.0
    assert not store.shared(key), "its copy could expire while Twilio fetches it"
    store.add(samples)
    assert store.shared(key) and redis_client.exists(f"hotline:twilio:audio:{key}")


def test_memory_keeps_the_most_recent_audio_within_its_bound(redis_client: redis.Redis) -> None:
    store = AudioStore(audio_secret(AUTH_TOKEN), None, max_bytes=40_000)
    keys = [store.add(tone(hz)) for hz in (350, 440, 480)]  # 16 kB each
    assert store.get(keys[0]) is None and all(store.get(k) for k in keys[1:])
    assert not store.shared(keys[2]), "no Redis: this node's own"
