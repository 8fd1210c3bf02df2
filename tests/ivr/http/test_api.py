"""The HTTP API: Flask's test client against a real Redis and a real trunk monitor, and
once through `hotline serve`'s waitress over a real socket."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from ivr.cli import cli
from ivr.http.app import create_app
from ivr.http.serving import HttpServer
from ivr.nodes import NodeInfo, NodeLease
from ivr.records import CallRecord, CallStore
from ivr.server import Server
from ivr.settings import ConfigError, Settings, load_settings
from tests.conftest import wait_for
from tests.ivr.conftest import WriteConfig
from tests.peers import Carrier, RedisServer, free_udp_port
from trunks.health import TrunkState
from trunks.monitor import TrunkMonitor
from trunks.store import TrunkStore

TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def config(write_config: WriteConfig, redis_server: RedisServer, carrier: Carrier,
           redis_client: redis.Redis) -> Path:
    """carrier-a is a live Kamailio; carrier-b's address answers nothing."""
    return write_config({"carrier-a": carrier.address, "carrier-b": "127.0.0.1:5998"},
                        redis_url=redis_server.url)


@pytest.fixture
def settings(config: Path) -> Settings:
    return load_settings(config)


@pytest.fixture
def monitor(settings: Settings, redis_client: redis.Redis) -> Iterator[TrunkMonitor]:
    monitor = TrunkMonitor(settings.trunks, TrunkStore(redis_client), settings.node,
                           heartbeat_s=0.2)
    monitor.start()

    def stored(trunk: str, state: TrunkState) -> bool:
        health = monitor.store.load_health(trunk, "node-1")
        return health is not None and health.state is state

    wait_for(lambda: stored("carrier-a", TrunkState.UP) and stored("carrier-b", TrunkState.DOWN),
             what="carrier-a UP and carrier-b DOWN in Redis")
    yield monitor
    monitor.stop()


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis) -> FlaskClient:
    return create_app(settings, redis_client, TOKEN).test_client()


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"}])
@pytest.mark.parametrize("path", ["/api/trunks", "/api/calls", "/api/tickets", "/api/drills",
                                  "/api/trunks/history", "/api/trunks/quality",
                                  "/api/nodes"])
def test_the_api_needs_the_token(client: FlaskClient, headers: dict[str, str],
                                 path: str) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="hotline"'
    assert response.json == {"error": "a bearer token is required (Authorization: Bearer ...)"}


def test_actions_without_the_token_change_nothing(client: FlaskClient,
                                                  redis_client: redis.Redis) -> None:
    response = client.post("/api/trunks/carrier-a/drain", json={"reason": "x"})
    assert response.status_code == 401
    assert TrunkStore(redis_client).get_override("carrier-a") is None


def test_health_and_readiness_need_no_token(client: FlaskClient, monitor: TrunkMonitor,
                                            redis_client: redis.Redis) -> None:
    assert client.get("/healthz").json == {"status": "ok", "node": "node-1"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"ready": True, "redis": True, "usable_trunks": ["carrier-a"]}
    client.post("/api/trunks/carrier-a/drain", headers=AUTH, json={"reason": "maintenance"})
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json["usable_trunks"] == []


def test_readiness_fails_without_redis(settings: Settings, tmp_path: Path) -> None:
    gone = redis.Redis(host="127.0.0.1", port=free_udp_port(), socket_timeout=0.2,
                       socket_connect_timeout=0.2)
    response = create_app(settings, gone, TOKEN).test_client().get("/readyz")
    assert response.status_code == 503 and response.json["redis"] is False
    gone.close()


def test_trunk_status_matches_the_cli(client: FlaskClient, monitor: TrunkMonitor,
                                      config: Path) -> None:
    rows = client.get("/api/trunks", headers=AUTH).json or []
    assert [(r["name"], r["node"], r["state"]) for r in rows] == [
        ("carrier-a", "node-1", "up"), ("carrier-b", "node-1", "down")]
    printed = CliRunner().invoke(cli, ["trunks", "status", "--json", "--config", str(config)])
    assert printed.exit_code == 0, printed.output
    assert [(r["name"], r["state"], r["priority"]) for r in json.loads(printed.output)] == [
        (r["name"], r["state"], r["priority"]) for r in rows]


def test_drain_force_restore_audit_like_the_cli(client: FlaskClient,
                                                redis_client: redis.Redis,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    drained = client.post("/api/trunks/carrier-a/drain", headers=AUTH,
                          json={"reason": "carrier maintenance", "expires": "2h", "by": "olga"})
    assert drained.status_code == 200
    body: dict[str, Any] = drained.json or {}
    assert body["override"]["action"] == "drain" and body["override"]["by"] == "olga"
    assert body["override"]["expires_at"] is not None and body["previous"] is None
    forced = client.post("/api/trunks/carrier-a/force", headers=AUTH,
                         json={"reason": "test the path"})
    assert (forced.json or {})["previous"]["action"] == "drain"
    restored = client.post("/api/trunks/carrier-a/restore", headers=AUTH, json={})
    assert (restored.json or {})["previous"]["action"] == "force"
    audit = [(e.action.value, e.by, e.reason, e.previous)
             for e in reversed(TrunkStore(redis_client).audit_log(10))]
    assert audit == [("drain", "olga", "carrier maintenance", None),
                     ("force", "api", "test the path", "drain by olga: carrier maintenance"),
                     ("restore", "api", "restored", "force by api: test the path")]
    history = client.get("/api/trunks/history?limit=3", headers=AUTH).json or []
    assert [e["what"] for e in history if e["kind"] == "operator"] == [
        "restore", "force", "drain"]
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/trunks/nope/drain", {"reason": "x"}, 404, "unknown trunk 'nope'"),
    ("/api/trunks/carrier-a/drain", {"reason": "  "}, 400, "reason must not be empty"),
    ("/api/trunks/carrier-a/drain", {"reason": "x", "expires": "soon"}, 400,
     "expires: expected a positive duration"),
    ("/api/trunks/carrier-a/force", ["not", "an", "object"], 400, "expected a JSON object"),
    ("/api/trunks/nope/restore", {}, 404, "unknown trunk 'nope'"),
    ("/api/calls?limit=0", None, 400, "limit: expected a whole number"),
    ("/api/tickets?status=lost", None, 400, "status: expected one of"),
    ("/api/nothing", None, 404, "The requested URL was not found"),
])
def test_bad_requests_get_clear_json_errors(client: FlaskClient, redis_client: redis.Redis,
                                            path: str, body: Any, status: int,
                                            error: str) -> None:
    response = (client.get(path, headers=AUTH) if body is None else
                client.post(path, headers=AUTH, json=body))
    assert response.status_code == status
    assert (response.json or {})["error"].startswith(error), response.json
    assert TrunkStore(redis_client).audit_log(10) == []


def test_calls_tickets_and_drills_are_listed(client: FlaskClient,
                                             redis_client: redis.Redis) -> None:
    CallStore(redis_client).save(CallRecord("c-1", "carrier-a", "13900000000", "400",
                                            time.time(), path=["welcome"], outcome="completed"))
    calls = client.get("/api/calls", headers=AUTH).json or []
    assert [(c["id"], c["path"], c["outcome"]) for c in calls] == [
        ("c-1", ["welcome"], "completed")]
    assert (client.get("/api/calls/c-1", headers=AUTH).json or {})["caller"] == "13900000000"
    assert client.get("/api/calls/c-2", headers=AUTH).status_code == 404
    assert client.get("/api/tickets", headers=AUTH).json == []
    assert client.get("/api/drills", headers=AUTH).json == []


def test_a_redis_outage_is_a_503_not_a_traceback(settings: Settings) -> None:
    gone = redis.Redis(host="127.0.0.1", port=free_udp_port(), socket_timeout=0.2,
                       socket_connect_timeout=0.2)
    client = create_app(settings, gone, TOKEN).test_client()
    response = client.post("/api/trunks/carrier-a/drain", headers=AUTH, json={"reason": "x"})
    assert response.status_code == 503
    assert response.json == {"error": "Redis is unreachable; nothing was changed"}
    gone.close()


def test_serve_runs_the_api_over_http(write_config: WriteConfig, redis_server: RedisServer,
                                      redis_client: redis.Redis) -> None:
    port = free_udp_port()  # the same number is very likely free on TCP too
    config = write_config({"carrier-a": "127.0.0.1:5999"}, redis_url=redis_server.url,
                          http={"listen": f"127.0.0.1:{port}", "token": TOKEN})
    server = Server(load_settings(config))
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"
        assert requests.get(f"{base}/api/trunks", timeout=5).status_code == 401
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        scraped = requests.get(f"{base}/metrics", headers=AUTH, timeout=5)
        assert scraped.status_code == 200 and scraped.headers["Content-Type"].startswith(
            "text/plain")
        families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
        assert {"hotline_trunk_state", "hotline_redis_up", "hotline_calls_active",
                "process_resident_memory_bytes"} <= families.keys()
        assert [(s.labels, s.value) for s in families["hotline_redis_up"].samples] == [
            ({"node": "node-1"}, 1.0)]
        # the only node, so the one that exports the cluster's metrics
        assert [s.value for s in families["hotline_cluster_exporter"].samples] == [1.0]
        assert "hotline_trunk_override" in families
        with requests.Session() as browser:  # keeps its connection open, as browsers do
            trunks = browser.get(f"{base}/api/trunks", headers=AUTH, timeout=5)
            assert trunks.status_code == 200 and trunks.json()[0]["name"] == "carrier-a"
            server.stop()  # must not wait for the browser to hang up
    finally:
        server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)


def test_a_part_that_fails_to_stop_does_not_keep_the_rest_running(
        write_config: WriteConfig, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    port = free_udp_port()
    config = write_config({"carrier-a": "127.0.0.1:5999"}, redis_url=redis_server.url,
                          http={"listen": f"127.0.0.1:{port}", "token": TOKEN})
    server = Server(load_settings(config))
    server.start()
    stop_http = HttpServer.stop

    def stop_then_fail(http: HttpServer) -> None:
        stop_http(http)
        raise RuntimeError("stuck socket")

    monkeypatch.setattr(HttpServer, "stop", stop_then_fail)
    server.stop()  # the monitor's threads are gone too: the leftovers check passes
    assert server.monitor is None and server.stopped.is_set()
    assert "Stopping HTTP failed; stopping the rest" in caplog.text


def test_an_api_without_a_token_is_a_config_error(write_config: WriteConfig,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTLINE_API_TOKEN", raising=False)
    config = write_config({"carrier-a": "127.0.0.1:5999"}, http={"listen": "127.0.0.1:8080"})
    with pytest.raises(ConfigError, match="the API needs a token of at least 16 characters"):
        Server(load_settings(config))
    with pytest.raises(ConfigError, match=r"http\.token: must be at least 16 characters"):
        load_settings(write_config({"carrier-a": "127.0.0.1:5999"},
                                   http={"listen": "127.0.0.1:8080", "token": "short"}))


def test_active_calls_are_the_unfinished_recent_ones(client: FlaskClient,
                                                     redis_client: redis.Redis) -> None:
    from ivr.http.calls import ACTIVE_MAX_S

    now, calls = time.time(), CallStore(redis_client)
    calls.save(CallRecord("live", "carrier-a", "13900000001", "400", now - 30,
                          path=["welcome", "menu"]))
    calls.save(CallRecord("ended", "carrier-a", "13900000002", "400", now - 20,
                          ended_at=now - 1, outcome="completed"))
    calls.save(CallRecord("orphan", "carrier-b", "13900000003", "400",
                          now - ACTIVE_MAX_S - 60))  # its node died mid-call
    calls.save(CallRecord("newer", "carrier-b", "13900000004", "400", now - 10))
    active = client.get("/api/calls?active=true", headers=AUTH).json or []
    assert [c["id"] for c in active] == ["newer", "live"]
    assert active[1]["path"] == ["welcome", "menu"]
    assert [c["id"] for c in client.get("/api/calls?active=true&limit=1",
                                        headers=AUTH).json or []] == ["newer"]
    assert [c["id"] for c in client.get("/api/calls", headers=AUTH).json or []] == [
        "newer", "ended", "live", "orphan"]


@pytest.mark.parametrize("value", ["false", "1", "yes", "", "TRUE"])
def test_active_takes_only_true(client: FlaskClient, value: str) -> None:
    response = client.get(f"/api/calls?active={value}", headers=AUTH)
    assert response.status_code == 400
    assert response.json == {"error": "active: expected true, or leave it out for every call"}


def test_trunk_quality_sums_up_each_trunks_latest_legs(client: FlaskClient,
                                                       redis_client: redis.Redis) -> None:
    calls = CallStore(redis_client)
    good, bad = {"mos": 4.38, "received_loss_percent": 0.0, "sent_loss_percent": 0.0}, \
        {"mos": 2.1, "received_loss_percent": 4.8, "sent_loss_percent": 0.5}
    for n, (caller, staff) in enumerate([(good, bad), (good, bad), (bad, good)]):
        record = CallRecord(f"q-{n}", "carrier-a", "13900000001", "400", 1000.0 + 100 * n,
                            ended_at=1060.0 + 100 * n, quality=caller)
        record.add_forward_attempt("alice", "carrier-b", "answered", 200, "OK")
        record.note_forward_quality(staff)
        calls.save(record)
    calls.save(CallRecord("q-live", "carrier-b", "13900000002", "400", 1500.0, quality=bad))

    rows = client.get("/api/trunks/quality", headers=AUTH).json
    assert rows == [
        {"trunk": "carrier-a", "legs": 3, "median_mos": 4.38, "worst_mos": 2.1,
         "worst_loss_percent": 4.8, "rating": "good", "last_at": 1260.0},
        {"trunk": "carrier-b", "legs": 3, "median_mos": 2.1, "worst_mos": 2.1,
         "worst_loss_percent": 4.8, "rating": "bad", "last_at": 1260.0}], \
        "a call still up is not counted yet"
    latest = client.get("/api/trunks/quality?calls=1", headers=AUTH).json or []
    assert [(r["trunk"], r["legs"], r["rating"]) for r in latest] == [
        ("carrier-a", 1, "bad"), ("carrier-b", 1, "good")]
    wrong = client.get("/api/trunks/quality?calls=0", headers=AUTH)
    assert wrong.status_code == 400
    assert wrong.json == {"error": "calls: expected a whole number from 1 to 100"}


def test_nodes_lists_the_live_nodes_leases(client: FlaskClient, settings: Settings,
                                           redis_client: redis.Redis) -> None:
    lease = NodeLease(redis_client, settings.redis.prefix,
                      NodeInfo("node-7", sip={"carrier-a": "10.0.0.7:5072"}, http="10.0.0.7:8080"),
                      live_calls=lambda: 2)
    lease.claim()
    try:
        [row] = client.get("/api/nodes", headers=AUTH).get_json()
        assert row["name"] == "node-7" and row["live_calls"] == 2
        assert row["sip"] == {"carrier-a": "10.0.0.7:5072"} and row["http"] == "10.0.0.7:8080"
        assert row["renewed_s_ago"] >= 0 and row["draining"] is False
    finally:
        lease.stop()
    assert client.get("/api/nodes", headers=AUTH).get_json() == []
