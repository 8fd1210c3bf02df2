"""The SIP parser front end: captured Kamailio replies and every kind of bad datagram."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunks.voip import CSeq, SipParseError, build_request, new_branch, parse_message
from trunks.voip.auth import digest_authorization
from trunks.voip.message import shorten, uri_address, uris
from trunks.voip.sdp import read_offer

DATA = Path(__file__).parent.parent / "data"
OK_200 = (DATA / "kamailio-options-200.sip").read_bytes()


def test_parses_a_captured_kamailio_reply() -> None:
    message = parse_message(OK_200)
    assert message.is_response
    assert (message.status_code, message.reason) == (200, "OK")
    assert message.call_id == "4b2f0c6e9a1d7e3f@127.0.0.1"
    assert (message.cseq.number, message.cseq.method) == (1, "OPTIONS")
    assert message.branch == "z9hG4bK6f1c2a9d0e"
    assert message.headers["To"]["tag"].startswith("ab84d786")


def test_parses_a_captured_404_to_invite() -> None:
    message = parse_message((DATA / "kamailio-invite-404.sip").read_bytes())
    assert (message.status_code, message.cseq.method) == (404, "INVITE")


def test_compact_lowercase_and_unspaced_headers_are_normalised() -> None:
    text = OK_200.decode()
    text = (text.replace("Call-ID: ", "i:").replace("Via: ", "v: ").replace("CSeq", "cseq")
            .replace("From: ", "f:  "))
    message = parse_message(text.encode())
    assert message.call_id == "4b2f0c6e9a1d7e3f@127.0.0.1"
    assert message.cseq.number == 1
    assert message.headers["From"]["tag"] == "8d1e0f3a"


def test_comma_separated_vias_become_a_list() -> None:
    message = parse_message(OK_200.replace(
        b"received=127.0.0.1", b"received=127.0.0.1, SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx"))
    assert [via["address"][0] for via in message.headers["Via"]] == ["127.0.0.1", "10.0.0.9"]
    assert message.branch == "z9hG4bK6f1c2a9d0e"


@pytest.mark.parametrize("code", [199, 422, 580])
def test_status_codes_missing_from_pyvoip_are_kept(code: int) -> None:
    message = parse_message(OK_200.replace(b"200 OK", f"{code} Odd".encode()))
    assert (message.status_code, message.reason) == (code, "Odd")


@pytest.mark.parametrize(("data", "complaint"), [
    (b"", "empty datagram"),
    (b"\x00\xff\xfe garbage", "truncated"),
    (OK_200[:60], "truncated"),
    (b"HTTP/1.1 200 OK\r\nHost: x\r\n\r\n", "not a SIP request or status line"),
    (OK_200.replace(b"Call-ID: 4b2f0c6e9a1d7e3f@127.0.0.1\r\n", b""), "no Call-ID"),
    (OK_200.replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"), "bad CSeq"),
    (OK_200.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1"), "could not parse"),
    (OK_200.replace(b"Allow:", b"Allow"), "malformed header line"),
    (OK_200.replace(b"From: <sip:", b"From: <tel:"), "could not parse"),
    (OK_200.replace(b"Content-Length: 0", b"Content-Length: 40"), "body has 0 of 40"),
    (OK_200.replace(b"Content-Length: 0", b"Content-Length: x"), "not a number"),
    (OK_200.replace(b"Server: kamailio", "Server: kam\u00e9".encode("latin-1")), "not UTF-8"),
    (b"SIP/2.0 200 OK\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n", "size limit"),
])
def test_bad_datagrams_raise_value_error_saying_why(data: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_message(data)


def test_built_request_parses_back() -> None:
    branch = new_branch()
    data = build_request("OPTIONS", "sip:carrier.example", local=("127.0.0.1", 5070),
                         call_id="c1@127.0.0.1", cseq=7, branch=branch,
                         from_uri="sip:hotline@127.0.0.1", from_tag="t1",
                         to_uri="sip:carrier.example", user_agent="test",
                         extra={"Accept": "application/sdp"})
    message = parse_message(data)
    assert message.method == "OPTIONS"
    assert message.branch == branch and branch.startswith("z9hG4bK")
    assert (message.cseq.number, message.headers["Accept"]) == (7, "application/sdp")


def test_repeated_route_headers_are_all_kept() -> None:
    text = OK_200.decode().replace(
        "Allow:", "Record-Route: <sip:10.0.0.1;lr>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\nAllow:")
    message = parse_message(text.encode())
    assert uris(message.headers["Record-Route"]) == ["sip:10.0.0.1;lr", "sip:10.0.0.2;lr"]


@pytest.mark.parametrize(("value", "expected"), [
    ("<sip:127.0.0.1:5062;lr;ftag=x>, <sip:10.0.0.1;lr>",
     ["sip:127.0.0.1:5062;lr;ftag=x", "sip:10.0.0.1;lr"]),
    ('"Bob, Jr" <sip:bob@1.2.3.4:5080;transport=udp>;expires=60, sip:c@d',
     ["sip:bob@1.2.3.4:5080;transport=udp", "sip:c@d"]),
    ("sip:alice@h:1234;x=y", ["sip:alice@h:1234"]),
])
def test_uris_of_name_addr_lists(value: str, expected: list[str]) -> None:
    assert uris(value) == expected


def test_uri_address() -> None:
    assert uri_address("sip:127.0.0.1:5062;lr") == ("127.0.0.1", 5062)
    assert uri_address("sip:bob@[::1]:7000") == ("::1", 7000)
    assert uri_address("sips:carrier.example") == ("carrier.example", 5060)
    with pytest.raises(ValueError, match="not a SIP URI"):
        uri_address("tel:+4930123")


def test_183_with_early_media_sdp() -> None:
    message = parse_message((DATA / "carrier-183-early-media.sip").read_bytes())
    assert (message.status_code, message.reason) == (183, "Session Progress")
    assert message.headers["To"]["tag"] == "as5e0b1c7d"
    assert uris(message.value("Record-Route") or "") == ["sip:127.0.0.3:5060;lr;ftag=3f9c2a61d0e4"]
    offer = read_offer(message)
    assert (offer.address, offer.port, offer.payload_type, offer.dtmf_payload_type) == (
        "127.0.0.3", 31000, 8, 101)


def test_407_challenge_is_answered_with_proxy_authorization() -> None:
    message = parse_message((DATA / "carrier-407-challenge.sip").read_bytes())
    assert message.status_code == 407 and message.cseq.method == "INVITE"
    assert (message.value("Proxy-Authenticate") or "").startswith('Digest realm="carrier.example"')
    header = digest_authorization(message, "INVITE", "sip:1002@127.0.0.3", "hotline", "s3cret")
    assert header is not None
    name, value = header
    assert name == "Proxy-Authorization"
    assert 'realm="carrier.example"' in value and "qop=auth" in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_compact_headers() -> None:
    message = parse_message((DATA / "compact-invite.sip").read_bytes())
    assert message.method == "INVITE" and message.uri == "sip:400@127.0.0.1:5062"
    assert message.call_id == "7a2e4c91b5d3@127.0.0.3"
    assert message.branch == "z9hG4bK2f7e9c1d"
    assert message.headers["From"]["tag"] == "c0ffee42"
    assert message.headers["From"]["number"] == "13900000002"
    assert message.headers["To"]["address"] == "400@127.0.0.1"
    assert uris(message.value("Contact") or "") == ["sip:13900000002@127.0.0.3:5060;transport=udp"]
    assert message.content_type == "application/sdp"
    assert read_offer(message).port == 31000


def test_multiple_via_headers_in_order() -> None:
    message = parse_message((DATA / "multi-via-response.sip").read_bytes())
    vias = message.values("Via")
    assert [v.split(";")[0] for v in vias] == [
        "SIP/2.0/UDP 127.0.0.3:5060", "SIP/2.0/UDP 127.0.0.4:5066",
        "SIP/2.0/UDP 127.0.0.5:5070", "SIP/2.0/TCP [::1]:5080"]
    assert message.branch == "z9hG4bKa1b2c3.0"
    assert [v["address"][0] for v in message.headers["Via"][:3]] == [
        "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def test_folded_headers_are_joined() -> None:
    message = parse_message((DATA / "folded-invite.sip").read_bytes())
    assert message.value("Via") == "SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK5e1d;rport"
    assert message.branch == "z9hG4bK5e1d"
    assert message.headers["From"]["tag"] == "f01d"
    assert message.headers["From"]["number"] == "13700000003"
    assert (message.cseq.number, message.cseq.method) == (3, "INVITE")
    assert message.value("Subject") == ("a subject: with a colon, continued on a second line")
    assert message.headers["Subject"] == message.value("Subject"), "pyVoIP's split at ': '"


RFC4475 = DATA / "rfc4475"


def torture(name: str) -> bytes:
    return (RFC4475 / f"{name}.sip").read_bytes()


def test_rfc4475_wsinv_short_tortuous_invite() -> None:
    message = parse_message(torture("wsinv"))
    assert message.method == "INVITE" and message.cseq == CSeq(9, "INVITE")
    assert message.headers["To"]["tag"] == "1918181833n"
    assert message.headers["From"]["tag"] == "98asjd8"
    assert message.values("Via") == ["SIP/2.0/UDP 192.0.2.2;branch=390skdjuw",
                                     "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8",
                                     "SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239"]
    assert message.value("Max-Forwards") == "0068"
    assert message.value("NewFangledHeader") == "newfangled value continued newfangled value"
    assert uris(message.value("Contact") or "") == ["sip:jdrosen@example.com"]
    assert read_offer(message).port == 49217


def test_rfc4475_intmeth_unusual_characters() -> None:
    message = parse_message(torture("intmeth"))
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert message.method == method and message.cseq == CSeq(139122385, method)
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert "\x00" in (message.value("To") or "") and "\x7f" in (message.value("To") or "")
    assert message.headers["From"]["tag"] == "_token~1'+`*%!-."
    assert message.value("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


@pytest.mark.parametrize(("name", "method", "call_id"), [
    ("esc01", "INVITE", "esc01.239409asdfakjkn23onasd0-3234"),
    ("escnull", "REGISTER", "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd"),
    ("esc02", "RE%47IST%45R", "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf"),
    ("lwsdisp", "OPTIONS", "lwsdisp.1234abcd@funky.example.com"),
    ("longreq", "INVITE", "longreq.one" + "really" * 40 + "longcallid"),
    ("dblreq", "REGISTER", "dblreq.0ha0isndaksdj99sdfafnl3lk233412"),
    ("semiuri", "OPTIONS", "semiuri.0ha0isndaksdj"),
    ("transports", "OPTIONS", "transports.kijh4akdnaqjkwendsasfdj"),
    ("mpart01", "MESSAGE", "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA.."),
    ("badbranch", "OPTIONS", "badbranch.sadonfo23i420jv0as0derf3j3n"),
    ("zeromf", "OPTIONS", "zeromf.jfasdlfnm2o2l43r5u0asdfas"),
    ("inv2543", "INVITE", "inv2543.1717@ift.client.example.com"),
    ("unkscm", "OPTIONS", "unkscm.nasdfasser0q239nwsdfasdkl34"),
    ("novelsc", "OPTIONS", "novelsc.asdfasser0q239nwsdfasdkl34"),
    ("regbadct", "REGISTER", "regbadct.k345asrl3fdbv@10.0.0.1"),
    ("invut", "INVITE", "invut.0ha0isndaksdjadsfij34n23d"),
])
def test_rfc4475_valid_requests_parse(name: str, method: str, call_id: str) -> None:
    message = parse_message(torture(name))
    assert (message.method, message.call_id) == (method, call_id)
    assert message.cseq.method == method


def test_rfc4475_details() -> None:
    assert parse_message(torture("esc01")).content_type == "application/sdp"  # "C:"
    longreq = parse_message(torture("longreq"))
    assert len(longreq.values("Via")) == 34 and longreq.branch is None
    assert longreq.headers["From"]["tag"] == "12" + "982" * 40 + "424"
    assert parse_message(torture("dblreq")).content == b""  # the INVITE after it is not body
    assert parse_message(torture("semiuri")).value("Accept") == (
        "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, "
        "message/sip, message/sipfrag")
    mpart = parse_message(torture("mpart01"))
    assert mpart.content_type == "multipart/mixed" and mpart.body == {}
    assert mpart.content.endswith(b"--7a9cbec02ceef655--\r\n") and b"\x00\xff" in mpart.content
    assert parse_message(torture("badbranch")).branch == "z9hG4bK"
    assert parse_message(torture("inv2543")).headers["From"]["tag"] == ""


@pytest.mark.parametrize(("name", "code", "reason"), [
    ("unreason", 200, "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432"
     "\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - "
     "\u043f\u0440\u043e\u0441\u0442\u043e\u0435"),
    ("noreason", 100, ""),
])
def test_rfc4475_valid_responses_parse(name: str, code: int, reason: str) -> None:
    message = parse_message(torture(name))
    assert (message.status_code, message.reason) == (code, reason)


@pytest.mark.parametrize(("name", "complaint", "status"), [
    ("badinv01", "malformed Via", 400),
    ("clerr", "body has 154 of 9999 bytes", 400),
    ("scalar02", "Content-Length is not a number", 400),
    ("scalarlg", "bad CSeq", 400),
    ("quotbal", "unterminated quoted string", 400),
    ("ltgtruri", "malformed Request-URI", 400),
    ("lwsruri", "malformed request line", 400),
    ("lwsstart", "malformed request line", 400),
    ("trws", "malformed request line", 400),
    ("escruri", "Request-URI has headers", 400),
    ("baddate", "Date is not in GMT", 400),
    ("badaspec", "To has a malformed URI", 400),
    ("baddn", "display name that is neither tokens nor quoted", 400),
    ("badvers", "SIP version 7.0 is not supported", 505),
    ("mismatch01", "CSeq method INFO is not the request's OPTIONS", 400),
    ("mismatch02", "CSeq method INVITE is not the request's NEWMETHOD", 400),
    ("multi01", "more than one", 400),
    ("mcl01", "more than one Content-Length", 400),
])
def test_rfc4475_invalid_requests_can_be_answered(name: str, complaint: str,
                                                  status: int) -> None:
    with pytest.raises(SipParseError, match=complaint) as raised:
        parse_message(torture(name))
    assert raised.value.status == status
    assert raised.value.request is not None, "Via, From, To, Call-ID and CSeq to answer with"
    assert raised.value.request.call_id.startswith(name)


@pytest.mark.parametrize(("name", "complaint"), [
    ("bigcode", "not a SIP request or status line"),
    ("insuf", "no From"),
])
def test_rfc4475_invalid_messages_that_cannot_be_answered(name: str, complaint: str) -> None:
    with pytest.raises(SipParseError, match=complaint) as raised:
        parse_message(torture(name))
    assert raised.value.request is None


def test_a_malformed_ack_is_not_answered() -> None:
    data = torture("mismatch01").replace(b"OPTIONS sip:", b"ACK sip:")
    with pytest.raises(SipParseError, match="CSeq method INFO") as raised:
        parse_message(data)
    assert raised.value.request is None


@pytest.mark.parametrize(("text", "expected"), [
    ("short", "short"),
    ("x" * 80, "x" * 80),
    ("x" * 10240, "x" * 80 + "...(10240 bytes)"),
    ("a\r\nb\x00c\x1b[31m", "a\\r\\nb\\x00c\\x1b[31m"),
    (b"\xff\xfeok", "\\xff\\xfeok"),
    ("\u5927" * 100, "\u5927" * 80 + "...(300 bytes)"),
])
def test_shorten_bounds_wire_text_for_logs(text: str | bytes, expected: str) -> None:
    assert shorten(text) == expected


def test_a_parse_error_about_a_10_kb_call_id_is_logged_short() -> None:
    huge = OK_200.replace(b"Call-ID: 4b2f0c6e9a1d7e3f@127.0.0.1",
                          b"Call-ID: " + b"c" * 10240).replace(b"CSeq: 1 OPTIONS",
                                                               b"CSeq: x OPTIONS")
    with pytest.raises(SipParseError) as raised:
        parse_message(huge)
    assert len(shorten(str(raised.value), 200)) < 240
