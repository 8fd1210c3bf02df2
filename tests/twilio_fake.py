"""Local stand-ins for Twilio's REST API and a webhook receiver.

`FakeTwilio` checks requests as Twilio's 2010-04-01 API does (Basic auth, the
account in the path, the required fields, phone numbers, TwiML that parses) and
answers with Twilio's error codes, so tests see the same exceptions the twilio
package raises against the real service; it also serves the recordings a test
stores, as <Record> leaves them. Both record what they received.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "tw-auth-7f3a9c1e5b"
FROM_NUMBER = "+15559990000"
_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json$")
_RECORDING = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Recordings/(RE[0-9a-f]{32})\.wav$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass
class Received:
    """One request as the server saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    fields: dict[str, str]
    status: int = 0
    code: int | None = None
    reply_type: str = "application/json"


class _Server(abc.ABC):
    """A ThreadingHTTPServer on 127.0.0.1 whose requests go to `answer()`."""

    name = "fake-server"

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> _Server:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @abc.abstractmethod
    def answer(self, request: Received) -> tuple[int, bytes]:
        """The status and body to send back for `request` (recorded already)."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Received(self.command, self.path,
                                   {k.lower(): v for k, v in self.headers.items()}, raw, {})
                status, reply = server.answer(request)
                with server.lock:
                    server.received.append(request)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", request.reply_type)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up waiting (timeout tests)

            do_GET = do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@dataclass
class _Failure:
    status: int
    code: int | None
    delay_s: float


class FakeTwilio(_Server):
    """Twilio's Messages and Calls resources for one account, on loopback.

    `fail_next(n, status, code)` answers the next n requests with an error (no
    JSON body when `code` is None, as a proxy's 503 would); `slow_next(n, s)`
    answers the next n only after s seconds (and creates them, as Twilio would).
    """

    name = "fake-twilio"

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        super().__init__()
        self.account_sid, self.auth_token = account_sid, auth_token
        self._plan: list[_Failure] = []
        self.recordings: dict[str, bytes] = {}
        """WAV files by RecordingSid, served at the recording's URL + ``.wav``."""

    def add_recording(self, wav: bytes) -> tuple[str, str]:
        """Store a recording; its RecordingSid and RecordingUrl, as <Record> reports."""
        sid = "RE" + secrets.token_hex(16)
        with self.lock:
            self.recordings[sid] = wav
        return sid, f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}"

    def __enter__(self) -> FakeTwilio:
        super().__enter__()
        return self

    def fail_next(self, count: int, status: int, code: int | None = None) -> None:
        with self.lock:
            self._plan += [_Failure(status, code, 0.0) for _ in range(count)]

    def slow_next(self, count: int, delay_s: float) -> None:
        with self.lock:
            self._plan += [_Failure(0, None, delay_s) for _ in range(count)]

    def created(self, resource: str) -> list[dict[str, str]]:
        """The fields of every request that created a ``Messages`` or ``Calls`` record."""
        with self.lock:
            return [r.fields for r in self.received
                    if r.status == 201 and r.path.endswith(f"/{resource}.json")]

    def answer(self, request: Received) -> tuple[int, bytes]:
        with self.lock:
            planned = self._plan.pop(0) if self._plan else None
        if planned is not None and planned.status:
            request.status, request.code = planned.status, planned.code
            if planned.code is None:
                return planned.status, b""
            return _error(planned.status, planned.code, "Injected failure")
        status, reply = self._check(request)
        if planned is not None:
            time.sleep(planned.delay_s)
        return status, reply

    def _check(self, request: Received) -> tuple[int, bytes]:
        if not self._authorized(request.headers.get("authorization", "")):
            return self._refuse(request, 401, 20003, "Authenticate")
        recording = _RECORDING.match(request.path)
        if request.method == "GET" and recording is not None:
            with self.lock:
                wav = self.recordings.get(recording[2])
            if recording[1] != self.account_sid or wav is None:
                return self._refuse(request, 404, 20404,
                                    f"The requested resource {request.path} was not found")
            request.status, request.reply_type = 200, "audio/wav"
            return 200, wav
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None or match[1] != self.account_sid:
            return self._refuse(request, 404, 20404,
                                f"The requested resource {request.path} was not found")
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self._refuse(request, 400, 20001, "Expected a form-encoded body")
        fields = parse_qs(request.raw.decode(), keep_blank_values=True)
        request.fields = {k: v[0] for k, v in fields.items()}
        problem = (self._message_problem if match[2] == "Messages" else
                   self._call_problem)(request.fields)
        if problem is not None:
            return self._refuse(request, 400, *problem)
        request.status = 201
        prefix = "SM" if match[2] == "Messages" else "CA"
        record = {"sid": prefix + secrets.token_hex(16), "account_sid": self.account_sid,
                  "to": request.fields["To"], "from": request.fields["From"],
                  "body": request.fields.get("Body"), "status": "queued",
                  "uri": request.path.removeprefix("/2010-04-01")}
        return 201, json.dumps(record).encode()

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return scheme == "Basic" and (user, password) == (self.account_sid, self.auth_token)

    @staticmethod
    def _message_problem(fields: dict[str, str]) -> tuple[int, str] | None:
        if not fields.get("To"):
            return 21604, "A 'To' phone number is required."
        if not fields.get("From") and not fields.get("MessagingServiceSid"):
            return 21603, "A 'From' or 'MessagingServiceSid' parameter is required."
        if not fields.get("Body") and not fields.get("MediaUrl"):
            return 21602, "Message body is required."
        if len(fields.get("Body", "")) > 1600:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        return _number_problem(fields)

    @staticmethod
    def _call_problem(fields: dict[str, str]) -> tuple[int, str] | None:
        if not fields.get("To"):
            return 21201, "No 'To' number is specified"
        if not fields.get("From"):
            return 21213, "No 'From' number is specified"
        given = [name for name in ("Url", "Twiml", "ApplicationSid") if fields.get(name)]
        if len(given) != 1:
            return 21205, "Exactly one of Url, Twiml or ApplicationSid is required"
        if "Twiml" in given:
            try:
                root = ET.fromstring(fields["Twiml"])
            except ET.ParseError:
                return 12100, "Document parse failure"
            if root.tag != "Response":
                return 12102, "The root element must be Response"
        return _number_problem(fields)

    def _refuse(self, request: Received, status: int, code: int,
                message: str) -> tuple[int, bytes]:
        request.status, request.code = status, code
        return _error(status, code, message)


class WebhookReceiver(_Server):
    """A webhook endpoint at ``/alerts`` that checks the HMAC signature when it knows the
    secret; answers the first `fail_first` requests with `fail_status`. The first
    `hold_first` requests get no answer until `release()` (then `fail_status`): a
    sender stuck mid-send."""

    name = "fake-webhook"

    def __init__(self, secret: str | None = None, fail_first: int = 0,
                 fail_status: int = 503, hold_first: int = 0) -> None:
        super().__init__()
        self.secret, self.fail_first, self.fail_status = secret, fail_first, fail_status
        self.hold_first = hold_first
        self.holding = 0
        """Requests held so far (answered or not)."""
        self._released = threading.Event()
        self.problems: list[str] = []

    def __enter__(self) -> WebhookReceiver:
        super().__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        super().__exit__(*exc_info)

    def release(self) -> None:
        """Answer the held requests."""
        self._released.set()

    @property
    def endpoint(self) -> str:
        return self.url + "/alerts"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r.raw) for r in self.received if r.status == 200]

    def answer(self, request: Received) -> tuple[int, bytes]:
        with self.lock:
            hold = self.holding < self.hold_first
            self.holding += hold
        if hold:
            self._released.wait(30)
            request.status = self.fail_status
            return request.status, b'{"problems": []}'
        problems = []
        if request.method != "POST" or request.path != "/alerts":
            problems.append(f"unexpected {request.method} {request.path}")
        if request.headers.get("content-type") != "application/json":
            problems.append(f"content-type {request.headers.get('content-type')!r}")
        if not request.headers.get("x-hotline-timestamp", "").isdigit():
            problems.append("no X-Hotline-Timestamp")
        if self.secret is not None:
            signed = request.headers.get("x-hotline-timestamp", "").encode() + b"." + \
                request.raw
            expected = "sha256=" + hmac.new(self.secret.encode(), signed,
                                            hashlib.sha256).hexdigest()
            if not hmac.compare_digest(request.headers.get("x-hotline-signature", ""),
                                       expected):
                problems.append("bad signature")
        with self.lock:
            self.problems += problems
            failing = sum(1 for r in self.received if r.status == self.fail_status) \
                < self.fail_first
        request.status = 400 if problems else self.fail_status if failing else 200
        return request.status, json.dumps({"problems": problems}).encode()


def _number_problem(fields: dict[str, str]) -> tuple[int, str] | None:
    if not _E164.match(fields["To"]):
        return 21211, f"The 'To' number {fields['To']} is not a valid phone number."
    if not _E164.match(fields["From"]):
        return 21212, f"The 'From' number {fields['From']} is not a valid phone number."
    return None


def _error(status: int, code: int, message: str) -> tuple[int, bytes]:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return status, json.dumps(body).encode()
