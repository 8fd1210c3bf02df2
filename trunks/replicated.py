"""Writes that must survive a Redis failover: confirmed by replicas (Redis ``WAIT``).

Redis replicates asynchronously: a write the master acknowledged and had not yet sent to
a replica is lost when Sentinel promotes that replica. For the writes that matter (a
ticket whose id a caller heard, a call's final record, a call-back), `execute` sends the
write and then ``WAIT replicas timeout`` on the same connection, and raises
`NotReplicated` when fewer replicas confirmed it in time. `NotReplicated` is a
``redis.RedisError``, so every caller already treats it as Redis being away: the write is
spooled or retried, and written again (each of these writes is idempotent) until
replicas confirm it. With ``replicas`` 0, a write is the master's word, as Redis has it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline


class NotReplicated(redis.RedisError):
    """The master took the write, but fewer replicas than asked confirmed it in time."""


def execute(client: redis.Redis, build: Callable[[Pipeline], None], replicas: int = 0,
            timeout_ms: int = 100) -> list[Any]:
    """Run the commands `build` adds to a pipeline as one transaction (MULTI/EXEC) and,
    with `replicas`, wait up to `timeout_ms` for that many replicas to have them; the
    commands' replies, in order."""
    if replicas <= 0:
        pipe = client.pipeline(transaction=True)
        build(pipe)
        return list(pipe.execute())
    pipe = client.pipeline(transaction=False)  # one connection: WAIT counts its writes
    command: Callable[..., object] = pipe.execute_command  # untyped in redis-py
    command("MULTI")
    build(pipe)
    command("EXEC")
    command("WAIT", replicas, timeout_ms)
    *_, replies, confirmed = pipe.execute()
    if int(confirmed) < replicas:
        raise NotReplicated(f"{confirmed} of {replicas} replicas confirmed the write within "
                            f"{timeout_ms} ms")
    return list(replies)


__all__ = ["NotReplicated", "execute"]
