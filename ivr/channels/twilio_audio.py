"""The audio Twilio plays on a call: every prompt as a WAV file, addressed by a keyed hash.

The key of a prompt is an HMAC of its samples under a secret drawn from the account's
auth token (`audio_secret`), so every node of the hotline gives the same prompt the same
key, and nobody without the token can name audio they were not sent. A node keeps what
its calls play in memory and puts a copy in Redis for `SHARED_S` (``{p}:twilio:audio:{key}``,
base64), so any node can serve any node's audio, and the URL can go through the public
address that every node shares (Twilio then caches one copy of each prompt for the
whole hotline). Redis is written and read with a bound on the wait (`trunks.bounded`):
audio Redis did not take stays this node's own (`shared` says so), and is served by it;
after such a failure, sharing pauses for `SHARE_RETRY_S`.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import redis

from speech.prompts import TELEPHONE_RATE
from speech.synthesizer import Samples, wav_bytes
from trunks.bounded import within

logger = logging.getLogger(__name__)

AUDIO_CACHE_BYTES = 64 << 20
"""Audio kept in each node's memory; the least recently added goes first."""
SHARED_S = 3600.0
"""How long a copy of a prompt stays in Redis. A node puts it there again when it plays
it after half of that, so audio in a document it sends is always there."""
SHARE_RETRY_S = 10.0
"""After Redis failed to take a copy, no audio is shared for this long: a hung Redis
costs a call one wait, not one per prompt."""
_KEY_LABEL = b"hotline twilio audio keys"


def audio_secret(auth_token: str) -> bytes:
    """The secret of audio keys: the same on every node of the account."""
    return hmac.new(auth_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


class AudioStore:
    """The WAV files Twilio plays, by a keyed hash of their samples: in memory (the least
    recently added go first once `max_bytes` is reached) and, with `client`, in Redis."""

    def __init__(self, secret: bytes, client: redis.Redis | None = None,
                 prefix: str = "hotline", max_bytes: int = AUDIO_CACHE_BYTES,
                 shared_s: float = SHARED_S, retry_s: float = SHARE_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = secret
        self._client, self._prefix = client, prefix
        self._max_bytes = max_bytes
        self._shared_s, self._retry_s = shared_s, retry_s
        self._clock = clock
        self._paused_until = 0.0
        """No sharing before this (`clock`): Redis failed to take a copy."""
        self._wavs: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._shared_at: dict[str, float] = {}
        """When this node last put each key in Redis (`clock`)."""
        self._lock = threading.Lock()

    def add(self, samples: Samples) -> str:
        """Keep `samples` as a WAV file (and share it); return its key."""
        pcm = np.asarray(samples, dtype="<i2").tobytes()
        key = hmac.new(self._secret, pcm, hashlib.sha256).hexdigest()[:32]
        with self._lock:
            if key in self._wavs:
                self._wavs.move_to_end(key)
                wav = self._wavs[key]
            else:
                wav = wav_bytes(samples, TELEPHONE_RATE)
                self._keep(key, wav)
            now = self._clock()
            due = (now - self._shared_at.get(key, -self._shared_s) >= self._shared_s / 2
                   and now >= self._paused_until)
        if due:
            self._share(key, wav)
        return key

    def get(self, key: str) -> bytes | None:
        """The WAV file of `key`: this node's, or another node's from Redis."""
        with self._lock:
            wav = self._wavs.get(key)
        if wav is not None or self._client is None:
            return wav
        client = self._client
        try:
            text = within(lambda: client.get(self._key(key)), name="twilio-audio")
        except redis.RedisError as exc:  # TooSlow included
            logger.warning("Twilio audio %s not read from Redis: %s", key, exc)
            return None
        if text is None:
            return None
        wav = base64.b64decode(str(text))
        with self._lock:
            if key not in self._wavs:
                self._keep(key, wav)
        return wav

    def shared(self, key: str) -> bool:
        """Whether every node can serve `key` now: its copy in Redis is recent."""
        with self._lock:
            at = self._shared_at.get(key)
        return at is not None and self._clock() - at < self._shared_s / 2

    def _share(self, key: str, wav: bytes) -> None:
        if self._client is None:
            return
        client, encoded = self._client, base64.b64encode(wav).decode()
        try:
            within(lambda: client.set(self._key(key), encoded, ex=round(self._shared_s)),
                   name="twilio-audio")
        except redis.RedisError as exc:  # TooSlow included: served by this node only
            logger.warning("Twilio audio %s not shared through Redis (trying again in %g s): "
                           "%s", key, self._retry_s, exc)
            with self._lock:
                self._paused_until = self._clock() + self._retry_s
            return
        with self._lock:
            if key in self._wavs:
                self._shared_at[key] = self._clock()

    def _keep(self, key: str, wav: bytes) -> None:
        """Add `wav` to memory (with the lock held)."""
        self._wavs[key] = wav
        self._bytes += len(wav)
        while self._bytes > self._max_bytes and len(self._wavs) > 1:
            gone, dropped = self._wavs.popitem(last=False)
            self._bytes -= len(dropped)
            self._shared_at.pop(gone, None)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:twilio:audio:{key}"


__all__ = ["AUDIO_CACHE_BYTES", "SHARED_S", "SHARE_RETRY_S", "AudioStore", "audio_secret"]
