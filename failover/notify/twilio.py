"""Twilio for alerts: the REST client (optionally at another API base) and the TwiML
that reads an alert out on a voice call.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

from failover.config import TwilioSettings

# Client() falls back to TWILIO_* environment variables for whatever is unset, and an
# empty mapping means os.environ; this one is not empty and sets nothing.
_NO_ENVIRONMENT = {"TWILIO_REGION": "", "TWILIO_EDGE": ""}



def voice_twiml(text: str) -> str:
    """TwiML that says `text` twice with a pause between; the text is XML-escaped."""
    response = VoiceResponse()
    response.say(text)
    response.pause(length=1)
    response.say(text)
    return str(response.to_xml(xml_declaration=False))


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Twilio's HTTP client, sending to `base_url` instead of https://api.twilio.com."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


def twilio_client(settings: TwilioSettings) -> Any:
    """A twilio `Client` for `settings`, deaf to TWILIO_* environment variables."""
    if settings.api_base_url:
        http = BaseUrlHttpClient(settings.api_base_url, timeout=settings.timeout_s)
    else:
        http = TwilioHttpClient(timeout=settings.timeout_s)
    return Client(settings.account_sid, settings.auth_token.get_secret_value(),
                  http_client=http, environment=dict(_NO_ENVIRONMENT))


__all__ = ["BaseUrlHttpClient", "twilio_client", "voice_twiml"]
