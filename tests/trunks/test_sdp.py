"""SDP offer/answer on captured offers."""

from __future__ import annotations

import pytest

from trunks.voip import parse_message
from trunks.voip.media import PCMA, PCMU
from trunks.voip.sdp import SdpError, SdpSession, build_offer, build_sdp, read_offer

SIPP_OFFER = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
              "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n"
              "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
              "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{direction}")


def invite(body: str) -> bytes:
    return ("INVITE sip:400@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1"
            "\r\nFrom: <sip:caller@127.0.0.1>;tag=1\r\nTo: <sip:400@127.0.0.1>\r\nCall-ID: abc\r\n"
            "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def test_offer_in_callers_order_with_dtmf() -> None:
    offer = read_offer(parse_message(invite(SIPP_OFFER.format(direction="a=sendrecv\r\n"))))
    assert (offer.address, offer.port, offer.payload_type) == ("127.0.0.1", 6000, PCMA)
    assert offer.dtmf_payload_type == 101 and not offer.on_hold


def test_hold_by_direction_or_null_address() -> None:
    held = read_offer(parse_message(invite(SIPP_OFFER.format(direction="a=sendonly\r\n"))))
    assert held.on_hold
    null = SIPP_OFFER.format(direction="").replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    assert read_offer(parse_message(invite(null))).on_hold


@pytest.mark.parametrize(("change", "complaint"), [
    (("RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000",
      "RTP/AVP 18 101\r\na=rtpmap:18 G729/8000"), "no G.711 codec"),
    (("m=audio", "m=video"), "no audio stream"),
    (("c=IN IP4 127.0.0.1\r\n", ""), "no connection address"),
])
def test_offers_we_cannot_answer(change: tuple[str, str], complaint: str) -> None:
    body = SIPP_OFFER.format(direction="").replace(*change)
    with pytest.raises(SdpError, match=complaint):
        read_offer(parse_message(invite(body)))


def test_answer_and_offer_parse_back() -> None:
    answer = build_sdp(("127.0.0.1", 20000), [PCMU], 101, session_id=7).decode()
    assert "m=audio 20000 RTP/AVP 0 101\r\n" in answer and "a=sendrecv\r\n" in answer
    parsed = read_offer(parse_message(invite(answer)))
    assert (parsed.port, parsed.payload_type, parsed.dtmf_payload_type) == (20000, PCMU, 101)
    ours = read_offer(parse_message(invite(build_offer(("127.0.0.1", 20002)).decode())))
    assert ours.payload_type == PCMU


def test_sdp_that_crashes_pyvoip_is_a_parse_error() -> None:
    body = SIPP_OFFER.format(direction="").replace("RTP/AVP 8 0 101", "RTP/AVP 18 101")
    with pytest.raises(ValueError, match="pyVoIP could not parse the message: UnboundLocalError"):
        parse_message(invite(body))


def test_a_calls_sdp_keeps_its_origin_and_versions_each_change() -> None:
    session = SdpSession(id=1234)
    local = ("127.0.0.1", 20000)
    answer = session.describe(local, [0], 101)
    assert b"o=hotline 1234 1234 IN IP4 127.0.0.1" in answer
    assert session.describe(local, [0], 101) == answer, "nothing changed: same version"
    held = session.describe(local, [0], 101, "recvonly")
    assert b"o=hotline 1234 1235 " in held and b"a=recvonly" in held
    resumed = session.describe(local, [0], 101)
    assert b"o=hotline 1234 1236 " in resumed and b"a=sendrecv" in resumed
