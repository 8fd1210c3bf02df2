"""Twilio calls on a hotline of several nodes sharing one Redis: each node its own app on
a real HTTP port (the nodes relay to each other over loopback), its lease, record writer
and takeover; Twilio's side played by `VoiceCaller`, which reaches a node's own URL
directly and the public URL wherever the test's load balancer sends it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from flask.testing import FlaskClient

from failover.callbacks import Callbacks
from failover.config import CallbackSettings
from failover.router import Router
from ivr.calls.cut_off import CallbackService
from ivr.calls.takeover import NODE_FAILURE, Takeover
from ivr.clock import fixed
from ivr.flow.model import Flow
from ivr.flow.oncall import load_oncall
from ivr.flow.runner import FlowRunner
from ivr.http.app import create_app
from ivr.http.serving import HttpServer
from ivr.http.twilio import TwilioVoice
from ivr.http.twilio_owners import RELAYED_HEADER, CallOwners
from ivr.nodes import NodeInfo, NodeLease
from ivr.records import SPOOL_PATH, CallStore, RecordSpool, RecordWriter, live_key
from ivr.server import Server
from ivr.settings import CUT_OFF_TEXT, Settings, TwilioVoiceSettings, load_settings
from ivr.tickets import TicketDesk
from ivr.tickets.store import TicketStore
from speech.prompts import PromptCache
from tests.conftest import wait_for
from tests.ivr.conftest import WriteConfig
from tests.ivr.http.conftest import (
    ALICE,
    ALICE_ON_DUTY,
    API_TOKEN,
    BOB,
    CALLER,
    MakeVoice,
    NoTrunks,
    record_of,
)
from tests.ivr.http.test_twilio import MENU_FLOW
from tests.peers import RedisServer, free_udp_port
from tests.twilio_caller import PUBLIC_URL, VoiceCaller
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN


@dataclasses.dataclass
class Node:
    """One node of the hotline, with the Twilio webhooks."""

    name: str
    url: str
    """Where Twilio reaches it: its own URL, or the public one."""
    voice: TwilioVoice
    client: FlaskClient
    http: HttpServer
    lease: NodeLease
    writer: RecordWriter
    up: bool = True

    def crash(self, lease_lapses: bool) -> None:
        """Die as SIGKILL would, as the others see it: its HTTP port closed, nothing more
        saved, and its lease lapsed, or still held (within the lease after the death)."""
        self.up = False
        self.http.stop()
        self.writer.stop()
        if lease_lapses:
            self.lease.stop()


MakeNode = Callable[..., Node]


@pytest.fixture
def make_node(espeak_prompts: PromptCache, oncall_file: Path, redis_client: redis.Redis,
              app_settings: Settings, ticket_desk: TicketDesk,
              tmp_path: Path) -> Iterator[MakeNode]:
    made: list[Node] = []

    def make(name: str, own_url: bool = True, flow: dict[str, Any] = MENU_FLOW) -> Node:
        parsed = Flow.model_validate(flow)
        espeak_prompts.warm(*parsed.prompts())
        runner = FlowRunner(parsed, espeak_prompts, now=fixed(ALICE_ON_DUTY),
                            oncall=load_oncall(oncall_file), dialer=Router(NoTrunks(), {}))
        port = free_udp_port()  # the same number is very likely free on TCP too
        lease = NodeLease(redis_client, "hotline", NodeInfo(name, http=f"127.0.0.1:{port}"),
                          lease_s=60)
        lease.claim()
        store = CallStore(redis_client)
        writer = RecordWriter(store, RecordSpool(tmp_path / f"{name}-{len(made)}" / SPOOL_PATH),
                              retry_s=0.1, node=name, run=lease.run)
        writer.start()
        settings = TwilioVoiceSettings(
            account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL,
            node_url=f"https://{name}.hotline.example.com" if own_url else None)
        callback = CallbackSettings()  # call-backs off: a ticket for staff to call back
        callbacks = CallbackService(Callbacks(redis_client, callback), callback,
                                    Router(NoTrunks(), {}), runner, writer, ticket_desk, dict)
        takeover = Takeover(redis_client, "hotline", name, lease.run, store,
                            callbacks.node_failed)
        voice = TwilioVoice(settings, runner, store, writer, no_input_s=3,
                            owners=CallOwners(redis_client, "hotline", name, lease.run,
                                              settings.own_url, AUTH_TOKEN),
                            cut_off=takeover.take_call)
        takeover.later = voice.awaits_report
        app = create_app(app_settings.model_copy(update={"node": name}), redis_client,
                         API_TOKEN, voice)
        http = HttpServer(app, "127.0.0.1", port, threads=4)
        http.start()
        node = Node(name, settings.own_url, voice, app.test_client(), http, lease, writer)
        made.append(node)
        return node

    yield make
    for node in made:
        node.voice.stop()
        if node.up:
            node.http.stop()
            node.writer.stop()
            node.lease.stop()


def caller_of(*nodes: Node) -> VoiceCaller:
    """A caller whose call comes in, through the public URL, on the first of `nodes`."""
    return VoiceCaller(nodes[0].client, CALLER,
                       nodes={n.url: n.client for n in nodes if n.url != PUBLIC_URL})


def test_a_calls_later_requests_go_to_its_own_node_and_its_status_is_relayed_there(
        make_node: MakeNode, redis_client: redis.Redis) -> None:
    node_a, node_b = make_node("node-a"), make_node("node-b")
    caller = caller_of(node_a, node_b)
    first = caller.call()
    assert first.verb("Gather").get("action") == f"{node_a.url}/twilio/voice/next?seq=1"
    assert all(url.startswith(f"{PUBLIC_URL}/twilio/audio/") for url in first.plays())
    caller.client = node_b.client  # the load balancer picks another node from now on
    hours = caller.answer(first, "Gather", Digits="2")
    assert hours.verbs == ["Play", "Gather"]
    assert hours.verb("Gather").get("action", "").startswith(f"{node_a.url}/")
    forged = caller.post(f"{node_a.url}/twilio/voice/next?seq=2", Digits="9",
                         signature=caller.validator.compute_signature(
                             f"{node_b.url}/twilio/voice/next?seq=2",
                             {**caller.params, "Digits": "9"}))
    assert forged.status_code == 403, "signed for another node's URL"

    assert caller.status("completed", 20).status_code == 204  # to node B, relayed to A
    record = record_of(redis_client, caller.sid)
    assert (record.node, record.end_reason, record.outcome) == (
        "node-a", "twilio: completed", "caller hung up")
    assert record.path == ["welcome", "menu", "hours", "menu"]
    wait_for(lambda: node_a.voice.active() == 0, what="node A's flow ended")
    assert node_b.voice.active() == 0 and not redis_client.hlen(live_key("hotline", "node-a"))


def test_without_node_urls_every_request_is_relayed_to_the_calls_node(
        make_node: MakeNode, redis_client: redis.Redis) -> None:
    node_a, node_b = make_node("node-a", own_url=False), make_node("node-b", own_url=False)
    caller = caller_of(node_a, node_b)
    first = caller.call()
    assert first.verb("Gather").get("action") == f"{PUBLIC_URL}/twilio/voice/next?seq=1"
    caller.client = node_b.client
    dial = caller.answer(first, "Gather", Digits="1")  # node B answers for node A
    assert dial.verbs == ["Play", "Dial"] and dial.verb("Dial").findtext("Number") == ALICE
    escalated = caller.answer(dial, "Dial", DialCallStatus="no-answer")
    assert escalated.verb("Dial").findtext("Number") == BOB
    goodbye = caller.answer(escalated, "Dial", DialCallStatus="completed",
                            DialCallSid="CA" + "b" * 32, DialCallDuration="42")
    assert goodbye.verbs == ["Play", "Hangup"]
    record = record_of(redis_client, caller.sid)
    assert (record.node, record.outcome, record.forwarded_to) == ("node-a", "forwarded", "bob")
    assert node_b.voice.active() == 0

    relayed = node_a.client.post("/twilio/voice/status", data={
        **caller.params, "CallStatus": "completed"}, headers={
        RELAYED_HEADER: "node-b", "X-Twilio-Signature": "forged"})
    assert relayed.status_code == 403, "a relayed request is checked like any other"


@pytest.mark.parametrize("lease_lapses", [False, True], ids=["within its lease", "lapsed"])
def test_a_caller_whose_node_died_hears_sorry_and_gets_a_ticket_through_the_fallback_url(
        make_node: MakeNode, redis_client: redis.Redis, espeak_prompts: PromptCache,
        lease_lapses: bool) -> None:
    node_a, node_b = make_node("node-a"), make_node("node-b")
    caller = caller_of(node_a, node_b)
    first = caller.call()
    record_of_a = wait_for_record(redis_client, caller.sid)
    assert record_of_a.node == "node-a"
    node_a.crash(lease_lapses)
    caller.client = node_b.client
    failed = first.verb("Gather").get("action") or ""  # Twilio cannot reach node A
    sorry = caller.fallback(failed)
    assert sorry.verbs == ["Play", "Hangup"]
    assert (caller.audio(sorry.plays()[0]) == espeak_prompts.text(CUT_OFF_TEXT)).all()

    assert caller.status("completed", 30).status_code == 204  # after the hang-up
    assert_cut_off(redis_client, caller.sid)
    assert node_b.voice.active() == 0


def test_a_status_callback_for_a_call_whose_node_died_takes_it_over(
        make_node: MakeNode, redis_client: redis.Redis) -> None:
    """Without a fallback URL, Twilio tells the caller itself that something failed, and
    the status callback comes."""
    node_a, node_b = make_node("node-a"), make_node("node-b")
    caller = caller_of(node_a, node_b)
    caller.call()
    wait_for_record(redis_client, caller.sid)
    node_a.crash(lease_lapses=False)
    caller.client = node_b.client
    assert caller.status("completed", 12).status_code == 204
    assert_cut_off(redis_client, caller.sid)


def test_a_restarted_node_takes_over_the_calls_of_its_last_run(
        make_node: MakeNode, redis_client: redis.Redis) -> None:
    before = make_node("node-a")
    caller = caller_of(before)
    first = caller.call()
    wait_for_record(redis_client, caller.sid)
    before.crash(lease_lapses=True)
    after = make_node("node-a")  # the same name and URL, a new run
    caller.client, caller.nodes = after.client, {after.url: after.client}
    sorry = caller.answer(first, "Gather", Digits="2")
    assert sorry.verbs == ["Play", "Hangup"]
    assert_cut_off(redis_client, caller.sid)


def test_the_fallback_url_gets_the_step_again_from_a_node_that_runs_the_call(
        make_node: MakeNode) -> None:
    node_a, node_b = make_node("node-a"), make_node("node-b")
    caller = caller_of(node_a, node_b)
    first = caller.call()
    caller.client = node_b.client  # the fallback reaches node B, which relays it
    again = caller.fallback(first.verb("Gather").get("action") or "", code="11200")
    assert again.verbs == ["Play", "Gather"], "no key came: the menu asks again"
    assert again.verb("Gather").get("action") == f"{node_a.url}/twilio/voice/next?seq=2"


def test_a_call_whose_first_request_failed_starts_on_the_fallback_node(
        make_node: MakeNode, redis_client: redis.Redis) -> None:
    node_b = make_node("node-b")
    caller = caller_of(node_b)
    first = caller.fallback(f"{PUBLIC_URL}/twilio/voice")
    assert first.verbs == ["Play", "Gather"]
    assert node_b.voice.active() == 1
    assert wait_for_record(redis_client, caller.sid).node == "node-b"
    assert '"node-b"' in str(redis_client.get(f"hotline:twilio:call:{caller.sid}"))


def test_the_audio_one_node_plays_is_served_by_every_node(make_voice: MakeVoice) -> None:
    _, node_a = make_voice(MENU_FLOW)
    _, node_b = make_voice(MENU_FLOW)
    plays = VoiceCaller(node_a, CALLER).call().plays()
    for url in plays:
        assert url.startswith(f"{PUBLIC_URL}/twilio/audio/"), "through the shared address"
        from_b = node_b.get(url.removeprefix(PUBLIC_URL))
        assert from_b.status_code == 200 and from_b.mimetype == "audio/wav"
        assert from_b.data == node_a.get(url.removeprefix(PUBLIC_URL)).data
    assert VoiceCaller(node_b, "+8613900000000").call().plays() == plays, "the same keys"


def test_the_fallback_url_is_signature_checked(make_voice: MakeVoice) -> None:
    _, client = make_voice(MENU_FLOW)
    assert client.post("/twilio/voice/fallback", data={
        "CallSid": "CA" + "0" * 32, "ErrorUrl": f"{PUBLIC_URL}/twilio/voice"}).status_code == 403


def wait_for_record(redis_client: redis.Redis, sid: str) -> Any:
    """The call's record, once its node has stored it."""
    store = CallStore(redis_client)
    wait_for(lambda: store.get(sid) is not None, what=f"the record of {sid}")
    return store.get(sid)


def assert_cut_off(redis_client: redis.Redis, sid: str) -> None:
    """The call's record is closed as cut off by its node's death, once, with a ticket for
    staff to call the caller back."""
    record = CallStore(redis_client).get(sid)
    assert record is not None and record.node == "node-a"
    assert (record.end_reason, record.outcome) == (NODE_FAILURE, "cut off")
    assert record.callback is not None and record.callback.startswith("ticket "), record.callback
    ticket = TicketStore(redis_client).get(record.callback.split()[1].rstrip(":"))
    assert ticket.caller == CALLER and ticket.call_id == sid
    assert not redis_client.hlen(live_key("hotline", "node-a"))


class HttpClient:
    """A node's app over real HTTP, answering as Flask's test client does."""

    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, data: dict[str, str], headers: dict[str, str]) -> Any:
        return _Reply(requests.post(self.base + path, data=data, headers=headers, timeout=15))

    def get(self, path: str) -> Any:
        return _Reply(requests.get(self.base + path, timeout=15))


class _Reply:
    def __init__(self, reply: requests.Response) -> None:
        self.status_code, self.data = reply.status_code, reply.content
        self.mimetype = reply.headers.get("Content-Type", "").split(";")[0]

    def get_data(self, as_text: bool = False) -> Any:
        return self.data.decode() if as_text else self.data


def test_two_served_nodes_answer_for_each_others_twilio_calls(
        write_config: WriteConfig, redis_server: RedisServer, redis_client: redis.Redis,
        tmp_path: Path) -> None:
    """Two `hotline serve` nodes with a Twilio number and no SIP trunk of their own."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump(MENU_FLOW))
    servers, bases = [], []
    for name in ("node-a", "node-b"):
        port = free_udp_port()
        bases.append(f"http://127.0.0.1:{port}")
        config = write_config({"carrier-a": "127.0.0.1:9"}, redis_url=redis_server.url,
                              node=name, flow=str(flow), data_dir=str(tmp_path / name), http={
                                  "listen": f"127.0.0.1:{port}", "token": API_TOKEN,
                                  "twilio": {"account_sid": ACCOUNT_SID,
                                             "auth_token": AUTH_TOKEN,
                                             "public_url": PUBLIC_URL,
                                             "node_url": bases[-1]}})
        servers.append(Server(load_settings(config)))
    try:
        for server in servers:
            server.start()
        assert all(server.takeover is not None for server in servers), "Twilio-only, too"
        node_a, node_b = (HttpClient(base) for base in bases)
        caller = VoiceCaller(node_a, CALLER,  # type: ignore[arg-type]
                             nodes={bases[0]: node_a, bases[1]: node_b})  # type: ignore[dict-item]
        first = caller.call()
        assert first.verb("Gather").get("action") == f"{bases[0]}/twilio/voice/next?seq=1"
        caller.client = node_b  # type: ignore[assignment]
        assert caller.audio(first.plays()[0]).size > 0  # node A's prompt, from node B
        hours = caller.answer(first, "Gather", Digits="2")
        assert hours.verbs == ["Play", "Gather"]
        assert caller.status("completed", 9).status_code == 204  # relayed to node A
        record = record_of(redis_client, caller.sid)
        assert (record.node, record.end_reason) == ("node-a", "twilio: completed")
        assert record.path == ["welcome", "menu", "hours", "menu"]
    finally:
        for server in servers:
            server.stop()
