"""SDP offer/answer for G.711 audio calls, on top of pyVoIP's SDP body parser."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from trunks.voip.media import PCMA, PCMU, TELEPHONE_EVENT, RtpStream
from trunks.voip.message import Message

CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}
HOLD_DIRECTIONS = frozenset({"sendonly", "inactive"})
PROFILE = "RTP/AVP"
"""The one transport profile we speak: plain RTP (no SRTP, no RTCP feedback)."""
_ANSWER_DIRECTIONS = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    """An offer we cannot answer; the SIP layer replies 488 Not Acceptable Here."""


@dataclass(frozen=True)
class MediaOffer:
    """What the far end's SDP asks for, reduced to what this server can do."""

    address: str
    port: int
    payload_type: int
    dtmf_payload_type: int | None
    direction: str
    rtcp_mux: bool = False
    """The offer multiplexes RTCP on the RTP port (RFC 5761 ``a=rtcp-mux``)."""
    rtcp_port: int | None = None
    """The RTCP port the offer names (RFC 3605 ``a=rtcp:``); None: the RTP port + 1."""

    @property
    def on_hold(self) -> bool:
        """Whether the far end holds the call: it will not receive, so we send nothing."""
        return self.direction in HOLD_DIRECTIONS or self.media_address is None

    @property
    def media_address(self) -> tuple[str, int] | None:
        """Where the offer's media goes; None for the old form of hold (c=0.0.0.0)."""
        return None if self.address in ("0.0.0.0", "::") else (self.address, self.port)

    @property
    def answer_direction(self) -> str:
        """Our direction in the answer (RFC 3264 6.1): sendonly answered recvonly,
        recvonly answered sendonly, inactive inactive, else sendrecv."""
        return _ANSWER_DIRECTIONS.get(self.direction, "sendrecv")


def read_offer(message: Message) -> MediaOffer:
    """The first G.711 codec in the offer's order, its address and direction."""
    body: dict[str, Any] = message.body  # parsed by pyVoIP only if the body is SDP
    audio = next((m for m in body.get("m", []) if m.get("type") == "audio"), None)
    if audio is None:
        raise SdpError("the offer has no audio stream")
    profile = message.media_profiles[body["m"].index(audio)]
    if profile != PROFILE:  # RFC 3264 6: the answer must keep the offer's profile
        raise SdpError(f"the audio stream's profile {profile} is not supported (only {PROFILE})")
    if not 0 < audio["port"] < 65536:
        raise SdpError(f"the audio stream's port {audio['port']} is disabled or invalid")
    connections = body.get("c") or []
    if not connections:
        raise SdpError("the offer has no connection address (c=)")
    offered = [int(pt) for pt in audio.get("methods", []) if str(pt).isdigit()]
    codec = next((pt for pt in offered if pt in CODEC_NAMES), None)
    if codec is None:
        raise SdpError(f"no G.711 codec among the offered payload types {offered}")
    attributes = audio.get("attributes", {})
    dtmf = next((int(pt) for pt, attrs in attributes.items()
                 if attrs.get("rtpmap", {}).get("name", "").lower() == "telephone-event"), None)
    direction = body.get("a", {}).get("transmit_type", "sendrecv")
    lines = _audio_lines(message.content)
    rtcp = next((line[7:].split()[0] for line in lines if line.startswith("a=rtcp:")), "")
    return MediaOffer(connections[0]["address"], int(audio["port"]), codec, dtmf, str(direction),
                      "a=rtcp-mux" in lines, int(rtcp) if rtcp.isdigit() else None)


def _audio_lines(content: bytes) -> list[str]:
    """The SDP's session-level lines and those of its first audio stream (pyVoIP drops
    the attributes it does not know, such as rtcp-mux)."""
    kept, section = [], "session"
    for line in content.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("m="):
            section = "audio" if line.startswith("m=audio") and section == "session" else "other"
        if section in ("session", "audio"):
            kept.append(line)
    return kept


def follow_offer(media: RtpStream, offer: MediaOffer) -> None:
    """Point a call's stream where a (re-)offer says: nothing sent while it holds the
    call, and its media address and RTCP port, unless it holds by c=0.0.0.0."""
    media.sending = not offer.on_hold
    if offer.media_address is not None:
        media.retarget(offer.media_address)
        media.rtcp_port = offer.rtcp_port


def build_sdp(local: tuple[str, int], payload_types: list[int],
              dtmf_payload_type: int | None, direction: str = "sendrecv",
              session_id: int | None = None, version: int | None = None,
              rtcp_mux: bool = False) -> bytes:
    """Our SDP: one audio stream with `payload_types` (an answer names one, an offer
    several) and, when given, telephone-event. Without `session_id` a new session
    (version = id); a call that answers more than once keeps an `SdpSession`."""
    host, port = local
    family = "IP6" if ":" in host else "IP4"
    session = session_id if session_id is not None else secrets.randbits(31)
    version = session if version is None else version
    formats = payload_types + ([dtmf_payload_type] if dtmf_payload_type is not None else [])
    lines = [
        "v=0",
        f"o=hotline {session} {version} IN {family} {host}",
        "s=hotline",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}",
        *(f"a=rtpmap:{pt} {CODEC_NAMES[pt]}/8000" for pt in payload_types),
    ]
    if dtmf_payload_type is not None:
        lines += [f"a=rtpmap:{dtmf_payload_type} telephone-event/8000",
                  f"a=fmtp:{dtmf_payload_type} 0-15"]
    lines += ["a=ptime:20", f"a={direction}", *(["a=rtcp-mux"] if rtcp_mux else [])]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class SdpSession:
    """Our side of one call's SDP (RFC 3264 8): the origin's session id stays for the
    whole call, and its version goes up by one each time what we describe changes (a hold
    answered recvonly, new media address), and only then."""

    id: int = field(default_factory=lambda: secrets.randbits(31))
    version: int | None = None
    _last: bytes | None = None

    def describe(self, local: tuple[str, int], payload_types: list[int],
                 dtmf_payload_type: int | None, direction: str = "sendrecv",
                 rtcp_mux: bool = False) -> bytes:
        """The SDP for this offer or answer, versioned against the previous one."""
        content = build_sdp(local, payload_types, dtmf_payload_type, direction, self.id, 0,
                            rtcp_mux)
        if self.version is None:
            self.version = self.id
        elif content != self._last:
            self.version += 1
        self._last = content
        return build_sdp(local, payload_types, dtmf_payload_type, direction, self.id,
                         self.version, rtcp_mux)


def build_offer(local: tuple[str, int]) -> bytes:
    """Our offer for an outgoing call: PCMU, PCMA and telephone-event."""
    return build_sdp(local, [PCMU, PCMA], TELEPHONE_EVENT)
