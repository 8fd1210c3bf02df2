"""Twilio calls on a hotline of several nodes sharing one Redis: two apps, each with the
webhooks of its own node, as Twilio would reach them through a load balancer."""

from __future__ import annotations

import redis

from tests.ivr.http.conftest import CALLER, MakeVoice
from tests.ivr.http.test_twilio import MENU_FLOW
from tests.twilio_caller import PUBLIC_URL, VoiceCaller


def test_the_audio_one_node_plays_is_served_by_every_node(make_voice: MakeVoice,
                                                          redis_client: redis.Redis) -> None:
    _, node_a = make_voice(MENU_FLOW)
    _, node_b = make_voice(MENU_FLOW)
    plays = VoiceCaller(node_a, CALLER).call().plays()
    for url in plays:
        assert url.startswith(f"{PUBLIC_URL}/twilio/audio/"), "through the shared address"
        from_b = node_b.get(url.removeprefix(PUBLIC_URL))
        assert from_b.status_code == 200 and from_b.mimetype == "audio/wav"
        assert from_b.data == node_a.get(url.removeprefix(PUBLIC_URL)).data
    assert VoiceCaller(node_b, "+8613900000000").call().plays() == plays, "the same keys"
