"""Registering a `register` trunk with a real Kamailio registrar that demands digest auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.peers import Carrier
from tests.sip_caller import registrar_bindings
from tests.trunks.conftest import no_calls
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.media import RtpEngine
from trunks.voip.registration import RegistrationState

pytestmark = pytest.mark.slow


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[Carrier]:
    carrier = Carrier(tmp_path / "registrar", auth_password="s3cret", min_expires=2)
    carrier.start()
    yield carrier
    carrier.stop()


def address(carrier: Carrier) -> tuple[str, int]:
    host, port = carrier.address.split(":")
    return host, int(port)


def endpoint(engine: RtpEngine, registrar: Carrier, password: str,
             failures: list[str] | None = None) -> SipEndpoint:
    host, port = registrar.address.split(":")
    sip = SipEndpoint("carrier-b", ("127.0.0.1", 0), engine, no_calls, allowed={host},
                      proxy=(host, int(port)), credentials=("hotline", password),
                      on_trunk_failure=None if failures is None else failures.append)
    sip.start()
    return sip


def test_registers_through_423_and_401_and_refreshes(engine: RtpEngine,
                                                     registrar: Carrier) -> None:
    sip = endpoint(engine, registrar, "s3cret")
    try:
        registration = sip.register(expires_s=1)  # below the registrar's minimum of 2 s
        wait_for(lambda: registration.state is RegistrationState.REGISTERED, timeout=5)
        assert registration.granted_s == 2 and registration.expires_s == 2
        first = registrar.requests("REGISTER")
        # the carrier checks credentials first: 401, then 423 (1 s is too brief),
        # then the new attempt with 2 s is challenged (401) and accepted
        assert first == 4
        wait_for(lambda: registrar.requests("REGISTER") >= first + 2, timeout=5,
                 what="a refresh at 80% of 2 s")
        wait_for(lambda: registration.state is RegistrationState.REGISTERED)
    finally:
        sip.stop()


def test_stop_unregisters_answering_the_challenge(engine: RtpEngine,
                                                  registrar: Carrier) -> None:
    sip = endpoint(engine, registrar, "s3cret")
    try:
        registration = sip.register(expires_s=60)
        wait_for(lambda: registration.state is RegistrationState.REGISTERED, timeout=5)
        assert registrar_bindings(address(registrar), "hotline", "s3cret") == [
            f"sip:hotline@127.0.0.1:{sip.address[1]}"]
        before = registrar.requests("REGISTER")
    finally:
        sip.stop()
    assert registration.state is RegistrationState.UNREGISTERED
    assert registrar.requests("REGISTER") == before + 2, "challenged, then with credentials"
    assert registrar_bindings(address(registrar), "hotline", "s3cret") == []


def test_wrong_password_fails_reports_and_retries(engine: RtpEngine,
                                                  registrar: Carrier) -> None:
    failures: list[str] = []
    sip = endpoint(engine, registrar, "wrong", failures)
    try:
        registration = sip.register(expires_s=60)
        wait_for(lambda: registration.state is RegistrationState.FAILED, timeout=5)
        assert registration.last_error == "401 Unauthorized"
        assert failures == ["REGISTER: 401 Unauthorized"]
        wait_for(lambda: len(failures) == 2, timeout=5, what="a retry after 2 s")
    finally:
        sip.stop()


def test_register_needs_credentials(engine: RtpEngine) -> None:
    sip = SipEndpoint("carrier-b", ("127.0.0.1", 0), engine, no_calls, allowed=set(),
                      proxy=("127.0.0.1", 9))
    try:
        with pytest.raises(ValueError, match="needs a proxy and credentials"):
            sip.register()
    finally:
        sip.stop()
