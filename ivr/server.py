"""`hotline serve`: the long-running process that ties the packages together."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from failover.busy import StaffLeases
from failover.callbacks import Callbacks
from failover.drill.service import SCHEDULE_GRACE_S, DrillService
from failover.drill.store import DrillStore
from failover.notify.alert import Alert, AlertKind, mask_number
from failover.notify.alerts import TrunkAlerts, drill_alert
from failover.notify.notifier import Notifier
from failover.router import Router
from ivr.calls.claims import AnswerClaims
from ivr.calls.cut_off import CallbackService
from ivr.calls.handler import CallHandler
from ivr.calls.recovery import Recovery
from ivr.calls.takeover import Takeover
from ivr.clock import Now, utc_now
from ivr.flow.model import load_flow
from ivr.flow.oncall import load_oncall
from ivr.flow.runner import FlowRunner
from ivr.flow.voicebot import VoiceBot
from ivr.http.app import create_app
from ivr.http.serving import HttpServer
from ivr.http.twilio import TwilioVoice
from ivr.http.twilio_owners import CallOwners
from ivr.metrics import build_registry
from ivr.nodes import NodeInfo, NodeLease
from ivr.records import SPOOL_PATH, CallStore, RecordSpool, RecordWriter, WriterState
from ivr.redis_server import EmbeddedRedis, RedisUnavailable, connect
from ivr.settings import ConfigError, Settings, TwilioVoiceSettings, config_path, load_yaml
from ivr.tickets import Outbox, TicketDesk, build_tickets
from ivr.tickets.model import Ticket
from ivr.tickets.store import TicketStore
from kb.calibration import Calibration
from kb.faq import Faq
from kb.index import open_index
from kb.progress import progress_reporter
from kb.search import Searcher
from speech.engines import create_recognizer, preload
from speech.prompts import PromptCache
from speech.synthesizer import create_synthesizer
from trunks.config import TrunkConfig, split_hostport
from trunks.monitor import TrunkMonitor
from trunks.store import TrunkStore
from trunks.voip.endpoint import SipEndpoint
from trunks.voip.media import RtpEngine

logger = logging.getLogger(__name__)

NOTIFY_FLUSH_S = 10.0
"""How long shutdown waits for queued alerts to go out."""


class Server:
    """Owns everything `serve` runs, started in dependency order, stopped in reverse."""

    def __init__(self, settings: Settings,
                 now: Now = utc_now) -> None:
        """`now` is the clock the flows read: business hours and who is on call."""
        self.settings = settings
        self.now = now
        self.flow = load_flow(settings.flow)  # a bad flow fails before anything starts
        node = settings.failover.callback.node
        if node is not None and node not in self.flow.nodes:
            raise ConfigError(settings.flow, [f"failover.callback.node: no node named {node!r} "
                                              "in the flow"])
        self.oncall = load_oncall(settings.oncall) if self.flow.forwards else None
        self.faq = load_yaml(settings.kb.faq, Faq) if self.flow.voicebots else None
        self.stopped = threading.Event()
        self.monitor: TrunkMonitor | None = None
        self.engine: RtpEngine | None = None
        self.records: RecordWriter | None = None
        self.endpoints: dict[str, SipEndpoint] = {}
        self.outbox: Outbox | None = None
        self.drill: DrillService | None = None
        self.callbacks: CallbackService | None = None
        self.takeover: Takeover | None = None
        self.staff: StaffLeases | None = None
        self.notifier: Notifier | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.http: HttpServer | None = None
        self.twilio: TwilioVoice | None = None
        self.lease: NodeLease | None = None
        self._stop_requested = threading.Event()
        self._drain_on_stop = False
        self._hurry = threading.Event()
        try:
            self._api_token = (settings.http.api_token(os.environ)
                               if settings.http.listen else "")
        except ValueError as exc:
            raise ConfigError(config_path(), [str(exc)]) from exc
        self._clients: list[redis.Redis] = []
        self._embedded = EmbeddedRedis(settings) if settings.redis.embedded else None

    def start(self) -> None:
        """Start everything, or nothing: a failure stops what had started and re-raises."""
        try:
            if self._embedded is not None:
                self._embedded.start()
            self._check_redis()
            client = self._connect()
            self._claim_node()
            self.notifier = self._notifier()
            self.monitor = TrunkMonitor(
                self.settings.trunks, TrunkStore(client, self.settings.redis.prefix),
                self.settings.node, on_transition=None if self.notifier is None else
                TrunkAlerts(self.notifier.send, [t.name for t in self.settings.trunks]))
            self.monitor.start()
            self._start_calls(CallStore(client, self.settings.redis.prefix))
            if self.settings.http.listen:
                self._start_http(self.settings.http.listen)
            assert self.lease is not None
            self.lease.start()
        except BaseException:
            self.stop()
            raise
        logger.info("Hotline server running as node %s", self.settings.node)

    def stop(self) -> None:
        """Stop everything that started, in reverse order. A part that fails to stop is
        logged and the rest still stop: nothing keeps running behind a failed shutdown."""
        for name, step in (("Twilio calls", self._stop_twilio), ("HTTP", self._stop_http),
                           ("drills", self._stop_drills), ("takeovers", self._stop_takeover),
                           ("call-backs", self._stop_callbacks),
                           ("SIP endpoints", self._stop_endpoints),
                           ("call records", self._stop_records),
                           ("staff leases", self._stop_staff),
                           ("node lease", self._stop_lease),
                           ("RTP engine", self._stop_engine), ("ticket outbox", self._stop_outbox),
                           ("trunk monitor", self._stop_monitor),
                           ("notifier", self._stop_notifier), ("Redis", self._stop_redis)):
            try:
                step()
            except Exception:
                logger.exception("Stopping %s failed; stopping the rest", name)
        self.stopped.set()

    def _claim_node(self) -> None:
        """Claim this node's name in Redis; fail if another live process holds it."""
        settings = self.settings
        info = NodeInfo(settings.node, sip={t.name: t.announced for t in settings.trunks
                                            if t.announced},
                        http=settings.http.listen)
        self.lease = NodeLease(self._connect(fail_fast=True), settings.redis.prefix, info,
                               live_calls=self.live_calls,
                               on_drain=lambda: self._request_stop(drain=True))
        self.lease.claim()

    def live_calls(self) -> int:
        """Calls up on this node's trunks."""
        return sum(len(endpoint.calls) for endpoint in list(self.endpoints.values()))

    def drain(self) -> None:
        """Take no new calls (503 to INVITEs and to the front door's probes; `register`
        trunks remove their registration, so the registrar sends them no more); calls up
        go on. `hotline nodes status` shows the node as draining."""
        for endpoint in list(self.endpoints.values()):
            endpoint.draining = True
            endpoint.unregister()
        if self.lease is not None:
            self.lease.info.draining = True
            self.lease.publish()
        logger.info("Node %s draining: %d calls up, taking no new ones", self.settings.node,
                    self.live_calls())

    def wait_drained(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """Wait until no call is up, at most `timeout_s`; whether they all ended."""
        deadline = time.monotonic() + timeout_s
        while (calls := self.live_calls()) and time.monotonic() < deadline:
            if self._hurry.wait(poll_s):
                break
        if calls:
            logger.warning("Node %s: %d calls still up after %g s of draining; ending them",
                           self.settings.node, calls, timeout_s)
        return not calls

    def _request_stop(self, drain: bool) -> None:
        """Stop serving: draining first, or at once. A stop at once that comes while the
        node drains cuts the drain short (SIGINT after SIGTERM)."""
        if not self._stop_requested.is_set():
            self._drain_on_stop = drain
        elif not drain:
            self._hurry.set()
        self._stop_requested.set()

    def _stop_lease(self) -> None:
        if self.lease is not None:  # once its calls' records are saved: a node without a
            lease, self.lease = self.lease, None  # lease may have its open calls taken over
            lease.stop()

    def _stop_twilio(self) -> None:
        if self.twilio is not None:  # its calls end, and their waiting requests answer
            twilio, self.twilio = self.twilio, None
            twilio.stop()

    def _stop_http(self) -> None:
        if self.http is not None:
            http, self.http = self.http, None
            http.stop()

    def _stop_drills(self) -> None:
        if self.drill is not None:  # a running drill is stopped and restores first
            self.drill.stop()
        if self.scheduler is not None:  # and waited for, if the schedule started it
            scheduler, self.scheduler = self.scheduler, None
            scheduler.shutdown(wait=True)
        self.drill = None

    def _stop_takeover(self) -> None:
        if self.takeover is not None:
            takeover, self.takeover = self.takeover, None
            takeover.stop()

    def _stop_callbacks(self) -> None:
        if self.callbacks is not None:
            callbacks, self.callbacks = self.callbacks, None
            callbacks.stop()

    def _stop_endpoints(self) -> None:
        for endpoint in self.endpoints.values():  # every call first: a flow may use any trunk
            endpoint.end_calls()
        for endpoint in self.endpoints.values():
            endpoint.stop()
        self.endpoints.clear()

    def _stop_staff(self) -> None:
        if self.staff is not None:  # after the calls, which give their people's leases up
            staff, self.staff = self.staff, None
            staff.stop()

    def _stop_records(self) -> None:
        if self.records is not None:  # after the calls, whose last records it saves
            records, self.records = self.records, None
            records.stop()

    def _stop_engine(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.stop()

    def _stop_outbox(self) -> None:
        if self.outbox is not None:
            outbox, self.outbox = self.outbox, None
            outbox.stop()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            monitor.stop()

    def _stop_notifier(self) -> None:
        if self.notifier is not None:  # last, so the alerts of everything above go out
            notifier, self.notifier = self.notifier, None
            notifier.flush(NOTIFY_FLUSH_S)
            notifier.stop()

    def _stop_redis(self) -> None:
        while self._clients:
            self._clients.pop().close()
        if self._embedded is not None:
            self._embedded.stop()

    def run_until_signalled(self) -> None:
        """Serve until SIGINT, SIGTERM or a drain request, then shut down cleanly.
        SIGINT hangs up every call at once. SIGTERM and `hotline nodes drain` drain first:
        no new calls, and the calls up may go on for `drain_timeout_s`."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("Received %s, shutting down", signal.Signals(signum).name)
            self._request_stop(drain=signum == signal.SIGTERM)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self._stop_requested.wait()
            if self._drain_on_stop:
                self.drain()
                self.wait_drained(self.settings.drain_timeout_s)
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start_calls(self, calls: CallStore) -> None:
        trunks = [t for t in self.settings.trunks if t.listen]
        twilio = self.settings.http.twilio
        if not trunks and twilio is None:
            logger.info("No trunk has a listen address and no Twilio number: monitoring "
                        "only, taking no calls")
            return
        prompts = PromptCache(self.settings.data_dir / "prompts",
                              create_synthesizer(self.flow.voice.engine,
                                                 **self.flow.voice.options))
        prompts.warm(*self.flow.prompts())
        monitor = self.monitor
        assert monitor is not None
        self.staff = StaffLeases(self._connect(fail_fast=True), self.settings.redis.prefix,
                                 self.settings.node)
        self.staff.start()
        router = Router(monitor, self.endpoints, self.settings.failover.hold_down_s,
                        staff=self.staff)
        desk = self._tickets()
        runner = FlowRunner(self.flow, prompts, now=self.now, oncall=self.oncall, dialer=router,
                            bot=self._voicebot(prompts, desk) if self.flow.voicebots else None)
        self.records = self._record_writer()
        if trunks:
            media = self.settings.media
            self.engine = RtpEngine(media.address, media.port_range, advertise=media.advertise)
            self.engine.start()
            if self.settings.drill.number is not None:
                self.drill = self._drill(router)
        else:  # its dead nodes' calls are still taken over: tickets, with no trunk to call
            logger.info("No trunk has a listen address: calls come only from Twilio")
        callback = self.settings.failover.callback
        self.callbacks = CallbackService(
            Callbacks(self._connect(fail_fast=True), callback, self.settings.redis.prefix,
                      replicas=self.settings.redis.replicas,
                      replica_wait_ms=self.settings.redis.replica_wait_ms),
            callback, router, runner, self.records, desk, monitor.snapshots)
        claims = AnswerClaims(self._connect(fail_fast=True), self.settings.redis.prefix,
                              self.settings.node)  # a forking registrar's calls reach every node
        handlers = {trunk.name: CallHandler(runner, self.records, trunk.name,
                                            vad=self.settings.speech.vad, drill=self.drill,
                                            on_cut_off=self.callbacks.cut_off,
                                            claims=claims if trunk.mode == "register" else None)
                    for trunk in trunks}
        for trunk in trunks:
            self.endpoints[trunk.name] = self._endpoint(trunk, handlers[trunk.name])
        self.callbacks.start()
        if twilio is not None:
            self.twilio = self._twilio(twilio, runner, calls)
        self.takeover = self._takeover(self.callbacks, self.records, handlers)
        if self.drill is not None:
            self.drill.start()
            trigger = self.drill.trigger
            if trigger is not None:  # on every node: the drill's slot makes it run once
                scheduler = BackgroundScheduler(timezone=self.settings.drill.timezone)
                scheduler.add_job(self.drill.scheduled, trigger, id="drill", max_instances=1,
                                  coalesce=True, misfire_grace_time=SCHEDULE_GRACE_S)
                scheduler.start()
                self.scheduler = scheduler  # once started: `stop` shuts it down
                logger.info("Drills scheduled: %s (%s), next at %s",
                            self.settings.drill.schedule, self.settings.drill.timezone,
                            scheduler.get_job("drill").next_run_time)

    def _start_http(self, listen: str) -> None:
        host, port = split_hostport(listen)
        app = create_app(self.settings, self._connect(fail_fast=True), self._api_token,
                         self.twilio, build_registry(self.monitor, self._connect(fail_fast=True),
                                                     self.settings.redis.prefix,
                                                     node=self.settings.node))
        self.http = HttpServer(app, host, port, self.settings.http.threads)
        self.http.start()
        logger.info("HTTP API on http://%s:%s/ (/api/ needs the bearer token)",
                    *self.http.address)

    def _twilio(self, settings: TwilioVoiceSettings, runner: FlowRunner,
                calls: CallStore) -> TwilioVoice:
        """The webhooks of the Twilio number, which relay requests for the other nodes'
        calls to them and take over the calls of nodes that are gone."""
        assert self.records is not None and self.lease is not None
        owners = CallOwners(self._connect(fail_fast=True), self.settings.redis.prefix,
                            self.settings.node, self.lease.run, settings.own_url,
                            settings.auth_token.get_secret_value())
        return TwilioVoice(settings, runner, calls, self.records,
                           no_input_s=self.settings.speech.vad.no_input_ms / 1000,
                           owners=owners, cut_off=self._take_call)

    def _take_call(self, call_id: str, node: str, run: str) -> bool:
        return self.takeover is not None and self.takeover.take_call(call_id, node, run)

    def _takeover(self, callbacks: CallbackService, records: RecordWriter,
                  handlers: dict[str, CallHandler]) -> Takeover:
        """The thread that takes up the bridged calls dead nodes left, closes their other
        calls and calls those callers back (this node's own earlier runs' once its
        record spool is replayed)."""
        assert self.lease is not None
        client = self._connect(fail_fast=True)
        node, run = self.settings.node, self.lease.run
        takeover = Takeover(client, self.settings.redis.prefix, node, run,
                            CallStore(client, self.settings.redis.prefix), callbacks.node_failed,
                            ready=lambda: records.state is WriterState.STORING,
                            recover=Recovery(self.endpoints, handlers, node, run),
                            later=None if self.twilio is None else self.twilio.awaits_report)
        takeover.start()
        return takeover

    def _drill(self, router: Router) -> DrillService:
        settings = self.settings
        client = self._connect()
        notifier = self.notifier
        return DrillService(
            DrillStore(client, settings.redis.prefix), TrunkStore(client, settings.redis.prefix),
            router, settings.drill, default_trunk=settings.drill_trunk().name,
            trunk_names=[t.name for t in settings.trunks], node=settings.node,
            reports_dir=settings.data_dir / "drills", on_report=None if notifier is None
            else lambda report: notifier.send(drill_alert(report)))

    def _record_writer(self) -> RecordWriter:
        """The writer of call records, on a client that gives up quickly on a hung Redis
        (the spool takes the records then), replaying a spool left by an earlier run."""
        settings = self.settings
        assert self.lease is not None
        writer = RecordWriter(CallStore(self._connect(fail_fast=True), settings.redis.prefix,
                                        replicas=settings.redis.replicas,
                                        replica_wait_ms=settings.redis.replica_wait_ms),
                              RecordSpool(settings.data_dir / SPOOL_PATH), node=settings.node,
                              run=self.lease.run)
        writer.start()
        return writer

    def _tickets(self) -> TicketDesk:
        """The ticket desk (for the voice bot and cut-off callers) and its outbox."""
        settings = self.settings
        client = self._connect(fail_fast=True)
        try:
            indexed = TicketStore(client, settings.redis.prefix).reindex()
            if indexed:
                logger.info("Indexed %d unresolved tickets by priority", indexed)
        except redis.RedisError as exc:  # the spool takes tickets while Redis is away
            logger.warning("Tickets not indexed by priority, Redis unreachable: %s", exc)
        desk, self.outbox = build_tickets(settings.tickets, client,
                                          prefix=settings.redis.prefix,
                                          data_dir=settings.data_dir, node=settings.node,
                                          replicas=settings.redis.replicas,
                                          replica_wait_ms=settings.redis.replica_wait_ms)
        self.outbox.start()
        if self.notifier is not None:
            desk.on_opened = self._ticket_alert
        return desk

    def _voicebot(self, prompts: PromptCache, desk: TicketDesk) -> VoiceBot:
        """The FAQ search (building its index the first time: minutes) and the
        recognizer's model."""
        settings = self.settings
        assert self.faq is not None and settings.kb.cache_dir is not None
        logger.info("Opening the FAQ search index for %s (the first time, building it takes "
                    "a few minutes)", settings.kb.faq)
        with progress_reporter() as progress:  # a bar on a terminal, else log lines
            index = open_index(self.faq, settings.kb.cache_dir, progress=progress)
        searcher = Searcher(self.faq, index, Calibration.load(settings.kb.calibration))
        models_dir = settings.speech.models_path(settings.data_dir)
        preload(settings.speech, models_dir)
        bot = VoiceBot(searcher, lambda: create_recognizer(settings.speech, models_dir), desk,
                       prompts, self.oncall, now=self.now)
        bot.warm()
        return bot

    def _notifier(self) -> Notifier | None:
        """The notifier, when `notify` has a way to reach anyone."""
        notify = self.settings.notify
        if notify.twilio is None and (notify.webhook is None or notify.webhook.url is None):
            logger.info("No notify.twilio or notify.webhook: alerts are only logged")
            return None
        notifier = Notifier(notify, self._connect(fail_fast=True), self.settings.redis.prefix,
                            node=self.settings.node)
        notifier.start()
        return notifier

    def _ticket_alert(self, ticket: Ticket) -> None:
        if ticket.priority == "P1" and self.notifier is not None:
            self.notifier.send(Alert(
                AlertKind.TICKET_P1, f"ticket:{ticket.id}",
                f"P1 ticket {ticket.id} from {mask_number(ticket.caller)}: {ticket.category}, "
                f"{ticket.reason}.", details={"ticket": ticket.id, "call": ticket.call_id}))

    def _check_redis(self) -> None:
        """Say whether Redis answers. An embedded Redis that does not is an error; a
        shared one may be away (failing over, restarting): the node starts degraded and
        its clients connect when Redis is back."""
        try:
            connect(self.settings, fail_fast=True).close()
        except RedisUnavailable as exc:
            if self._embedded is not None:
                raise
            logger.warning("Starting without Redis (%s): calls are answered and routed by "
                           "the trunks' health and the overrides as this node last knew them "
                           "(none yet), records and tickets are spooled to disk, and the "
                           "node's lease is claimed once Redis answers", exc)

    def _connect(self, fail_fast: bool = False) -> redis.Redis:
        self._clients.append(connect(self.settings, fail_fast, check=False))
        return self._clients[-1]

    def _endpoint(self, trunk: TrunkConfig, handler: CallHandler) -> SipEndpoint:
        assert self.engine is not None and self.monitor is not None and trunk.listen
        monitor = self.monitor
        password = trunk.password.get_secret_value() if trunk.password else None
        endpoint = SipEndpoint(
            trunk.name, split_hostport(trunk.listen), self.engine, handler,
            allowed={*_addresses(trunk.address[0]), *trunk.addresses}, proxy=trunk.address,
            domain=trunk.sip_domain,
            credentials=(trunk.username, password) if trunk.username and password else None,
            on_trunk_failure=lambda reason: monitor.report_failure(trunk.name, reason),
            advertise=split_hostport(trunk.announced)
            if trunk.advertise and trunk.announced else None,
            media_timeout_s=self.settings.failover.callback.silence_s,
            symmetric_rtp=trunk.symmetric_rtp)
        endpoint.start()
        if trunk.mode == "register":
            endpoint.register(trunk.register_expires_s)
        return endpoint


def _addresses(host: str) -> set[str]:
    """Every IP address `host` resolves to (the host itself if it is an address)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        logger.warning("Cannot resolve trunk proxy %s; no calls accepted from it", host)
        return set()
