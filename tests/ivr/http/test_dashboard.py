"""The operator dashboard in real headless Chromium (Debian's), driven by Playwright,
against `hotline serve`: waitress on a real socket, a real Redis and a Kamailio carrier.

Screenshots are kept in var/test-artifacts/ (dashboard*.png), also of a failing test."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.wrappers import Response

from failover.drill.report import DrillReport, Result
from failover.drill.store import DrillStore
from failover.notify.alert import mask_number
from ivr.http.app import create_app
from ivr.http.calls import ACTIVE_MAX_S
from ivr.quality import MOS_BAD, MOS_POOR
from ivr.records import CallRecord, CallStore
from ivr.server import Server
from ivr.settings import load_settings
from ivr.tickets.model import Priority
from ivr.tickets.store import TicketStore
from tests.conftest import ROOT
from tests.ivr.conftest import WriteConfig
from tests.ivr.tickets.peers import make_ticket
from tests.peers import Carrier, RedisServer, free_udp_port

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError:  # the dev extra is not installed; the browser tests skip
    HAVE_PLAYWRIGHT = False
else:
    HAVE_PLAYWRIGHT = True

TOKEN = "dashboard-token-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "var" / "test-artifacts"
LIVE_TIMEOUT_MS = 15_000
"""Long enough for a trunk to be declared DOWN and the page's next poll (every 2 s)."""
NO_VALUE = "\u2013"
"""What the page shows where there is no value."""
HOSTILE = "<script>window.pwned = 1</script>"
HOSTILE_IMG = '<img src="x" onerror="window.pwned = 2">'


@dataclass
class Dashboard:
    """The dashboard page in a fresh browser context, with what its console reported."""

    page: Page
    url: str
    errors: list[str] = field(default_factory=list)

    def sign_in(self, token: str = TOKEN) -> None:
        self.page.goto(f"{self.url}/dashboard")
        self.page.fill("#token", token)
        self.page.click("#connect")

    def trunk_state(self, trunk: str) -> Locator:
        return self.page.locator(f'#trunks tr[data-trunk="{trunk}"] .state')

    def shot(self, name: str) -> None:
        # Written here, not by Playwright: its file writes start a thread pool that would
        # outlive the test.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.png").write_bytes(self.page.screenshot(full_page=True))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; Playwright never downloads a browser of its own."""
    if not HAVE_PLAYWRIGHT:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: run `sudo make install` "
                    "(or apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def serve(write_config: WriteConfig, carrier: Carrier) -> Iterator[Callable[[str], Server]]:
    """Start `hotline serve` with its HTTP API, on the given Redis: carrier-a is the live
    Kamailio, carrier-b's address answers nothing."""
    servers: list[Server] = []

    def start(redis_url: str) -> Server:
        config = write_config({"carrier-a": carrier.address,
                               "carrier-b": f"127.0.0.1:{free_udp_port()}"},
                              redis_url=redis_url,
                              http={"listen": f"127.0.0.1:{free_udp_port()}", "token": TOKEN})
        server = Server(load_settings(config))
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[[str], Server], redis_server: RedisServer,
           redis_client: redis.Redis) -> Server:
    return serve(redis_server.url)  # after redis_client has emptied Redis


@pytest.fixture
def dashboard(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Dashboard]:
    """A new page (its own sessionStorage); screenshotted when the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(LIVE_TIMEOUT_MS)
    view = Dashboard(page, "")
    page.on("pageerror", lambda error: view.errors.append(f"page error: {error}"))
    page.on("console", lambda message: view.errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    failed = request.session.testsfailed
    yield view
    if request.session.testsfailed > failed:
        view.shot(f"dashboard-failed-{request.node.name}")
    context.close()


def url_of(server: Server) -> str:
    assert server.http is not None
    host, port = server.http.address
    return f"http://{host}:{port}"


# The page itself, without a browser.

@pytest.fixture
def client(write_config: WriteConfig, redis_server: RedisServer,
           redis_client: redis.Redis) -> FlaskClient:
    settings = load_settings(write_config({"carrier-a": "127.0.0.1:5999"},
                                          redis_url=redis_server.url))
    return create_app(settings, redis_client, TOKEN).test_client()


def fetch(client: FlaskClient, path: str) -> tuple[Response, str]:
    """The response to GET `path` and its text, its file closed."""
    with client.get(path) as response:
        return response, response.get_data(as_text=True)


def test_the_page_needs_no_token_holds_no_data_and_is_locked_down(
        client: FlaskClient) -> None:
    home, _ = fetch(client, "/")
    assert home.status_code == 302 and home.headers["Location"] == "/dashboard"
    page, html = fetch(client, "/dashboard")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert TOKEN not in html and "carrier-a" not in html
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attributes and not body for attributes, body in scripts)
    assert "<style" not in html and "style=" not in html, "the CSP forbids inline style"
    for path in ("/dashboard", "/dashboard/static/dashboard.js",
                 "/dashboard/static/dashboard.css"):
        response, _ = fetch(client, path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    _, script = fetch(client, "/dashboard/static/dashboard.js")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert fetch(client, "/dashboard/static/nothing.js")[0].status_code == 404


def test_the_page_rates_a_live_call_as_the_server_rates_trunks(client: FlaskClient) -> None:
    _, script = fetch(client, "/dashboard/static/dashboard.js")
    assert f"const MOS_POOR = {MOS_POOR};" in script and f"const MOS_BAD = {MOS_BAD};" in script
    _, html = fetch(client, "/dashboard")
    assert f"poor below {MOS_POOR}, bad below {MOS_BAD}" in " ".join(html.split())


# In the browser.

@pytest.mark.slow
def test_trunk_health_refreshes_live(server: Server, carrier: Carrier,
                                     dashboard: Dashboard) -> None:
    dashboard.url = url_of(server)
    dashboard.sign_in()
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    expect(dashboard.trunk_state("carrier-b")).to_have_text("DOWN")
    expect(dashboard.page.locator("#updated")).to_contain_text("Last updated")
    navigations: list[str] = []
    dashboard.page.on("framenavigated", lambda frame: navigations.append(frame.url))

    carrier.kill()
    expect(dashboard.trunk_state("carrier-a")).to_have_text("DOWN", timeout=LIVE_TIMEOUT_MS)
    assert navigations == [], "the page changed without reloading"
    dashboard.shot("dashboard-trunk-down")
    assert dashboard.errors == []


@pytest.mark.slow
def test_calls_tickets_and_drills_show_up_as_text(server: Server, dashboard: Dashboard,
                                                 redis_client: redis.Redis) -> None:
    dashboard.url = url_of(server)
    dashboard.sign_in()
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    page = dashboard.page
    expect(page.locator("#calls tbody")).to_have_text("No calls in progress.")

    now, caller = time.time(), "+8613812345678"
    calls = CallStore(redis_client)
    calls.save(CallRecord("c-live", "carrier-a", caller, "400", now - 75,
                          answered_at=now - 74, path=["welcome", "menu"]))
    calls.save(CallRecord("c-ended", "carrier-a", "+15550001111", "400", now - 60,
                          ended_at=now - 5, path=["welcome"]))
    calls.save(CallRecord("c-orphan", "carrier-b", "+15550002222", "400",
                          now - ACTIVE_MAX_S - 60, path=["welcome"]))
    _, ticket = TicketStore(redis_client).add(make_ticket(category=HOSTILE,
                                                          priority=Priority.P1))
    drills = DrillStore(redis_client)
    drills.save_report(DrillReport("d-old", "carrier-b", "400", "node-1", "olga", "cli",
                                   now - 86400 * 3, now - 86400 * 3 + 20, Result.PASSED,
                                   calls=[{"number": 1, "ok": True}, {"number": 2, "ok": True}],
                                   restored=True), keep=10)
    drills.save_report(DrillReport("d-new", "carrier-b", "400", "node-1", "schedule",
                                   "schedule", now - 600, now - 580, Result.FAILED,
                                   calls=[{"number": 1, "ok": False}], restored=True,
                                   problems=[HOSTILE_IMG]), keep=10)

    live = page.locator('#calls tr[data-call="c-live"] td')
    expect(live).to_have_text([mask_number(caller), "carrier-a", _any(), _any(), "menu",
                               NO_VALUE])
    expect(page.locator("#calls tbody tr")).to_have_count(1)
    row = page.locator(f'#tickets tr[data-ticket="{ticket.id}"] td')
    expect(row).to_have_text([ticket.id, "P1", "open", HOSTILE, _any()])
    expect(page.locator("#drills tbody tr")).to_have_count(2)
    failed = page.locator('#drills tr[data-drill="d-new"]')
    for text in ("FAILED", "0 of 1 test calls passed; by schedule (schedule)", HOSTILE_IMG):
        expect(failed).to_contain_text(text)
    expect(page.locator('#drills tr[data-drill="d-old"]')).to_contain_text(
        "2 of 2 test calls passed; by olga (cli)")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("main script, main img").count() == 0
    assert caller not in page.content()
    dashboard.shot("dashboard")
    assert dashboard.errors == []


@pytest.mark.slow
def test_call_quality_flags_a_bad_trunk_and_shows_each_live_calls_mos(
        server: Server, dashboard: Dashboard, redis_client: redis.Redis) -> None:
    dashboard.url = url_of(server)
    dashboard.sign_in()
    page = dashboard.page
    quality = page.locator("#quality")
    expect(quality.locator('tr[data-trunk="carrier-a"] .rating')).to_have_text("NO DATA")

    now, calls = time.time(), CallStore(redis_client)
    clean = {"mos": 4.38, "received_loss_percent": 0.0, "sent_loss_percent": 0.0}
    lossy = {"mos": 2.05, "received_loss_percent": 5.1, "sent_loss_percent": None}
    for n in range(3):  # carrier-a carries the callers cleanly, carrier-b loses 5 %
        record = CallRecord(f"q-{n}", "carrier-a", "+15550000000", "400", now - 900 + 60 * n,
                            answered_at=now - 899 + 60 * n, ended_at=now - 850 + 60 * n,
                            quality=clean)
        record.add_forward_attempt("alice", "carrier-b", "answered", 200, "OK")
        record.note_forward_quality(lossy)
        calls.save(record)
    calls.save(CallRecord("c-bad", "carrier-a", "+8613812345678", "400", now - 40,
                          answered_at=now - 39, path=["menu"],
                          quality={"mos": 3.4, "received_loss_percent": 1.6}))

    bad = quality.locator('tr[data-trunk="carrier-b"]')
    expect(bad.locator(".rating")).to_have_text("BAD")
    expect(bad.locator(".rating")).to_have_class(re.compile(r"\bbad\b"))
    expect(bad.locator("td")).to_have_text(["carrier-b", "3", "2.05", "2.05", "5.10 %", "BAD",
                                            _any()])
    good = quality.locator('tr[data-trunk="carrier-a"]')
    expect(good.locator(".rating")).to_have_text("GOOD")
    expect(good.locator("td").nth(4)).to_have_text("0.00 %")
    mos = page.locator('#calls tr[data-call="c-bad"] .mos')
    expect(mos).to_have_text("3.40")
    expect(mos).to_have_class(re.compile(r"\bwarn\b"))  # poor: below 3.6
    dashboard.shot("dashboard-quality")
    assert dashboard.errors == []


@pytest.mark.slow
def test_a_wrong_token_shows_the_form_with_an_error(server: Server,
                                                    dashboard: Dashboard) -> None:
    dashboard.url = url_of(server)
    page = dashboard.page
    dashboard.sign_in("a pass phrase is not a token")
    expect(page.locator("#login-error")).to_contain_text("That is not a token")
    page.fill("#token", "not-the-token-0123456789")
    page.click("#connect")
    expect(page.locator("#login-error")).to_contain_text("refused this token")
    expect(page.locator("#dashboard")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    dashboard.shot("dashboard-wrong-token")

    page.fill("#token", TOKEN)
    page.click("#connect")
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    expect(page.locator("#login")).to_be_hidden()
    assert TOKEN not in page.content(), "the token is kept out of the page"
    assert page.evaluate("localStorage.length") == 0
    page.reload()  # the tab keeps the token; no second prompt
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    page.click("#sign-out")
    expect(page.locator("#token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert dashboard.errors == []


@pytest.mark.slow
def test_outages_show_a_banner_and_keep_the_data_marked_stale(
        serve: Callable[[str], Server], own_redis: RedisServer, dashboard: Dashboard) -> None:
    server = serve(own_redis.url)
    dashboard.url = url_of(server)
    page = dashboard.page
    dashboard.sign_in()
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()

    own_redis.stop()
    expect(banner).to_contain_text("Redis unreachable")
    expect(page.locator("#trunks .stale-tag")).to_be_visible()
    expect(page.locator("#updated")).to_contain_text("(stale)")
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    dashboard.shot("dashboard-redis-down")

    own_redis.start()
    expect(banner).to_be_hidden()
    expect(page.locator("#trunks .stale-tag")).to_be_hidden()

    server.stop()
    expect(banner).to_contain_text("Cannot reach the hotline server")
    expect(dashboard.trunk_state("carrier-a")).to_have_text("UP")
    expect(page.locator("#token")).to_be_hidden()
    assert dashboard.errors == []


def _any() -> re.Pattern[str]:
    """A pattern for a cell whose text depends on the clock."""
    return re.compile(r".+")
