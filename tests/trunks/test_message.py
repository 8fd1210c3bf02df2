"""The SIP parser front end: captured Kamailio replies and every kind of bad datagram."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunks.voip import build_request, new_branch, parse_message
from trunks.voip.message import uri_address, uris

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
