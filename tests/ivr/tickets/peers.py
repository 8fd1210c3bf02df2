"""Peers and helpers for the ticket tests: a Redis that can be stopped, a fake helpdesk."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.tickets.ids import new_uid, ticket_id
from ivr.tickets.model import Candidate, Priority, Ticket, Turn
from tests.peers import RedisServer

TOKEN = "s3cret-token"
HELPDESK_PATH = "/api/tickets"
REQUIRED_FIELDS = ("schema", "id", "uid", "caller", "call_id", "trunk", "transcript",
                   "candidates", "category", "priority", "sla_due_at", "status")


def make_ticket(**changes: Any) -> Ticket:
    uid = new_uid()
    values: dict[str, Any] = dict(
        id=ticket_id(uid), uid=uid, created_at=time.time(), caller="+8613800000000",
        call_id=f"call-{uid[:6]}", trunk="carrier-a", reason="no confident answer",
        category="printers", priority=Priority.P3, priority_reasons=("default priority P3",),
        sla_due_at=time.time() + 86400,
        transcript=(Turn("bot", "How can I help?"), Turn("caller", "Error E42 on the printer")),
        candidates=(Candidate("printer-e42", "What does E42 mean?", 0.61, "printers",
                              Priority.P3),))
    values.update(changes)
    return Ticket(**values)


def persistent_redis(workdir: Path) -> RedisServer:
    """A redis-server that keeps its data across a stop and start (fsynced AOF)."""
    server = RedisServer(workdir)
    server.command += ["--appendonly", "yes", "--appendfsync", "always"]
    return server


def fast_client(server: RedisServer, timeout_s: float = 0.5) -> redis.Redis:
    """A client that fails at once when Redis is away, instead of retrying for seconds."""
    return redis.Redis(unix_socket_path=str(server.socket), decode_responses=True,
                       socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=Retry(NoBackoff(), 0))


def stored_uids(client: redis.Redis, prefix: str = "hotline") -> list[str]:
    """The uid of every ticket document in Redis (duplicates would show twice)."""
    keys = sorted(client.scan_iter(f"{prefix}:ticket:*"))
    return [json.loads(client.get(key))["uid"] for key in keys]  # type: ignore[arg-type]


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int


@dataclass
class FakeHelpdesk:
    """A helpdesk webhook on 127.0.0.1 that checks what it receives.

    It answers `down_status` (with `retry_after`, if set) to the first
    `down_for` requests, sleeps `slow_first_s`
    before answering the first request it accepts (a client timeout, with the
    ticket created anyway), and creates each Idempotency-Key only once, as a
    real helpdesk would.
    """

    down_for: int = 0
    down_status: int = 503
    retry_after: str | None = None
    slow_first_s: float = 0.0
    status: int = 201
    received: list[Received] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{HELPDESK_PATH}"

    @contextmanager
    def running(self) -> Iterator[FakeHelpdesk]:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        thread = threading.Thread(target=self._server.serve_forever, name="fake-helpdesk",
                                  kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()

    def answer(self, headers: dict[str, str], raw: bytes, method: str, path: str) -> int:
        problems = self._check(headers, raw, method, path)
        body = json.loads(raw) if not problems else {}
        with self.lock:
            self.problems += problems
            number = len(self.received)
            if problems:
                status = 400
            elif number < self.down_for:
                status = self.down_status
            elif headers["idempotency-key"] in self.created:
                status = 200  # a retry of a ticket already created: not created again
            else:
                self.created[headers["idempotency-key"]] = body
                status = self.status
            self.received.append(Received(headers, body, status))
        if number == self.down_for and self.slow_first_s:
            time.sleep(self.slow_first_s)
        return status

    def keys_received(self) -> list[str]:
        with self.lock:
            return [r.headers.get("idempotency-key", "") for r in self.received]

    def _check(self, headers: dict[str, str], raw: bytes, method: str, path: str) -> list[str]:
        problems = []
        if method != "POST" or path != HELPDESK_PATH:
            problems.append(f"unexpected {method} {path}")
        if headers.get("content-type") != "application/json":
            problems.append(f"content-type {headers.get('content-type')!r}")
        if headers.get("authorization") != f"Bearer {TOKEN}":
            problems.append(f"authorization {headers.get('authorization')!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            return [*problems, "body is not JSON"]
        missing = [name for name in REQUIRED_FIELDS if name not in body]
        if missing:
            problems.append(f"body lacks {missing}")
        elif headers.get("idempotency-key") != body["uid"]:
            problems.append(f"idempotency-key {headers.get('idempotency-key')!r} is not the uid")
        return problems

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        helpdesk = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = helpdesk.answer(headers, raw, self.command, self.path)
                reply = json.dumps({"ok": status < 300}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if status == helpdesk.down_status and helpdesk.retry_after:
                        self.send_header("Retry-After", helpdesk.retry_after)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up waiting (the timeout test)

            do_GET = do_PUT = do_POST  # refused in answer()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
