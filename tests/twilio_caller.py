"""Twilio's side of a voice call, for tests: the webhooks Twilio would send the hotline,
signed with the twilio package's own `RequestValidator`, and the TwiML it answers,
parsed and followed verb by verb as Twilio would follow it."""

from __future__ import annotations

import io
import secrets
import wave
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from speech.synthesizer import Samples
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN

PUBLIC_URL = "https://hotline.example.com"
HOLDS_MAX = 30
"""Pause-and-ask-again documents followed before a test gives up on a stuck flow."""
VERBS = {"Play", "Gather", "Dial", "Record", "Redirect", "Pause", "Hangup", "Reject", "Say"}


class Document:
    """One TwiML document the hotline answered with."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root = ET.fromstring(text)
        assert self.root.tag == "Response", text
        unknown = {v.tag for v in self.root} - VERBS
        assert not unknown, f"not TwiML verbs: {unknown}"

    @property
    def verbs(self) -> list[str]:
        return [v.tag for v in self.root]

    def verb(self, tag: str) -> ET.Element:
        found = self.root.find(tag)
        assert found is not None, f"no <{tag}> in {self.text}"
        return found

    def plays(self) -> list[str]:
        """Every audio URL, in the order Twilio plays them (inside a <Gather> too)."""
        return [p.text or "" for p in self.root.iter("Play")]

    @property
    def hold(self) -> bool:
        """"Still working, ask again": a pause and a redirect."""
        return self.verbs == ["Pause", "Redirect"]


class VoiceCaller:
    """One caller's call, as Twilio reports it to the hotline's webhooks: `client` is the
    app the public URL reaches (the load balancer's pick, which a test may change), and
    `nodes` the apps that Twilio reaches at their own URLs."""

    def __init__(self, client: FlaskClient, caller: str = "+8613912345678",
                 called: str = "+15557770000", auth_token: str = AUTH_TOKEN,
                 account_sid: str = ACCOUNT_SID, public_url: str = PUBLIC_URL,
                 nodes: dict[str, FlaskClient] | None = None) -> None:
        self.client = client
        self.nodes = dict(nodes or {})
        self.sid = "CA" + secrets.token_hex(16)
        self.public_url = public_url
        self.validator = RequestValidator(auth_token)
        self.params = {"CallSid": self.sid, "AccountSid": account_sid, "From": caller,
                       "To": called, "Direction": "inbound", "ApiVersion": "2010-04-01"}
        self.documents: list[Document] = []

    def post(self, url: str, signature: str | None = None, **params: str) -> Any:
        """POST `params` (with the call's own) to `url`, signed as Twilio signs."""
        form = {**self.params, **params}
        if signature is None:
            signature = self.validator.compute_signature(url, form)
        base, client = self._route(url)
        return client.post(url.removeprefix(base), data=form,
                           headers={"X-Twilio-Signature": signature})

    def call(self) -> Document:
        """The call comes in: Twilio asks the number's voice URL."""
        return self._document(self.post(f"{self.public_url}/twilio/voice",
                                        CallStatus="ringing"))

    def answer(self, document: Document, verb: str, **params: str) -> Document:
        """Do what `document`'s `verb` would lead to: request its action with `params`."""
        action = document.verb(verb).get("action")
        assert action, f"<{verb}> has no action: {document.text}"
        return self._document(self.post(action, CallStatus="in-progress", **params))

    def redirect(self, document: Document) -> Document:
        """Follow `document`'s <Redirect>, as Twilio does once the verbs before it end."""
        url = document.verb("Redirect").text or ""
        return self._document(self.post(url, CallStatus="in-progress"))

    def status(self, status: str, duration: int = 0) -> Any:
        """The number's status callback."""
        return self.post(f"{self.public_url}/twilio/voice/status", CallStatus=status,
                         CallDuration=str(duration))

    def fallback(self, failed: str, code: str = "11205") -> Document:
        """Twilio could not get a document from `failed` (11205: no connection): it asks
        the number's fallback URL."""
        return self._document(self.post(f"{self.public_url}/twilio/voice/fallback",
                                        CallStatus="in-progress", ErrorUrl=failed,
                                        ErrorCode=code))

    def audio(self, url: str) -> Samples:
        """What Twilio would play for a <Play> URL, as 8 kHz samples."""
        base, client = self._route(url)
        reply = client.get(url.removeprefix(base))
        assert reply.status_code == 200 and reply.mimetype == "audio/wav", reply.status
        with wave.open(io.BytesIO(reply.data)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")

    def _route(self, url: str) -> tuple[str, FlaskClient]:
        """The base of `url` and the app Twilio reaches there."""
        for base, client in self.nodes.items():
            if url.startswith(f"{base}/"):
                return base, client
        assert url.startswith(f"{self.public_url}/"), f"{url} is not one of the hotline's"
        return self.public_url, self.client

    def _document(self, reply: Any) -> Document:
        assert reply.status_code == 200, (reply.status_code, reply.data)
        assert reply.mimetype == "text/xml"
        document = Document(reply.get_data(as_text=True))
        for _ in range(HOLDS_MAX):
            if not document.hold:
                break
            # the flow is busy: Twilio pauses, then asks again
            document = Document(self.post(document.verb("Redirect").text or "",
                                          CallStatus="in-progress").get_data(as_text=True))
        assert not document.hold, f"the flow was busy for {HOLDS_MAX} holds"
        self.documents.append(document)
        return document
