"""Wiring of the collector: one place builds store, vault, ingest, service and web."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from collector import keys
from collector.config import CollectorConfig
from collector.cases import seal_actions
from collector.ingest import Ingestor
from collector.leader import Leader, Leadership, SoleLeadership
from collector.notify import Notifier, PahoPublisher
from collector.pki import broker_tls
from collector.readinessrunner import ReadinessRunner
from collector.rulerunner import RulebookRunner
from collector.service import IngestService
from collector.timeseries import open_sink
from collector.store import Store
from collector.vault.wiring import open_vault, vault_host
from collector.web.app import create_app

log = logging.getLogger("venueguard.collector")
#: Events per rulebook step (one transaction), and how long one tick may keep stepping: the tick runs
#: in ingest's thread, so a backlog is worked off in slices that never hold ingest up for long.
RULES_STEP = 2000
RULES_TICK_SECONDS = 0.5


def open_store(cfg: CollectorConfig) -> Store:
    """The migrated store of this configuration."""
    cfg.collector.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.database_url)
    store.migrate()
    return store


class Collector:
    """A running collector: ingest from the broker, and the web pages."""

    def __init__(self, cfg: CollectorConfig, *, web: bool = True) -> None:
        self.cfg = cfg
        data = cfg.collector.data_dir
        self.store = open_store(cfg)
        self.key = keys.load_or_create(data / "collector.key")
        self.vault = open_vault(cfg)  # Merkle log, signed checkpoints, witness copies
        # Every collector of a cluster ingests; one, the leader, runs what needs a single writer:
        # ingest's sweep, the rulebook, readiness and notices (deploy/scale-out.md).
        cl = cfg.cluster
        self.leadership: Leader = (Leadership(self.store.engine, cl.node_id, cl.leader_poll_seconds) if cl.enabled
                                   else SoleLeadership())
        ing = cfg.ingest
        self.ingestor = Ingestor(self.store, self.vault, self.key, deadline_factor=ing.deadline_factor,
                                 gap_grace=ing.gap_grace, max_clock_skew=ing.max_clock_skew, vault_id=cfg.vault_id)
        self.service = IngestService(self.ingestor, cfg.broker.host, cfg.broker.port, cfg.client_id, ing.batch_max,
                                     tls=broker_tls(cfg.broker), session_expiry=cfg.session_expiry,
                                     share_group=cl.share_group if cl.enabled else None, leader=self.leadership.held)
        self.rules = RulebookRunner(self.store, cfg.rules.folder, notify=cfg.notify, reload_seconds=cfg.rules.reload_seconds,
                                    fence=self.leadership.fence)
        self._rules_epoch = self.leadership.epoch  # the leadership the rulebook's memory belongs to
        self.service.add_periodic(self._rules_tick)
        self.readiness = ReadinessRunner(self.store, self.vault, self.key, cfg.readiness, cfg.schedule.timezone,
                                         connected=self.service.connected.is_set, vault_id=cfg.vault_id)
        self.service.add_periodic(self.readiness.tick)  # rounds, commands, venue reports, seals
        publisher = PahoPublisher(self.service.client, timeout=cfg.notify.send_timeout)
        self.notifier = Notifier(self.store.engine, cfg.notify, publish=publisher, active=self.leadership.held)
        # Telemetry tails the store in its own thread: InfluxDB down never holds ingest or acks.
        self.timeseries = open_sink(cfg, self.store)  # None when [influx] url is empty
        self._web: uvicorn.Server | None = None
        if web:
            config = uvicorn.Config(create_app(self.store, cfg), host=cfg.web.host, port=cfg.web.port, log_level="warning")
            self._web = uvicorn.Server(config)
        self._web_thread: threading.Thread | None = None

    def _rules_tick(self) -> None:
        """Rules over what ingest indexed since, then the case actions into the vault."""
        if self.leadership.epoch != self._rules_epoch:  # leader again: another collector ran the rules meanwhile
            self.rules.reset()
            self._rules_epoch = self.leadership.epoch
        self.rules.reload_if_changed()
        deadline = time.monotonic() + RULES_TICK_SECONDS
        while self.rules.step(limit=RULES_STEP) == RULES_STEP and time.monotonic() < deadline:
            pass
        seal_actions(self.store, self.vault, time.time(), vault_id=self.cfg.vault_id)

    def start(self) -> None:
        """Index what the vault has beyond the store, then start ingest and the web."""
        self.ingestor.load(host=vault_host(self.cfg))
        self.leadership.start()
        self.service.start()
        self.notifier.start()
        if self.timeseries is not None:
            self.timeseries.start()
        if self._web is not None:
            self._web_thread = threading.Thread(target=self._web.run, name="web", daemon=True)
            self._web_thread.start()
        log.info("collector running: broker %s:%s, web http://%s:%s/", self.cfg.broker.host, self.cfg.broker.port,
                 self.cfg.web.host, self.cfg.web.port)

    def stop(self) -> None:
        """Stop ingest (finishing the current batch), the web, and close files."""
        self.notifier.stop()
        self.service.stop()
        self.leadership.stop()
        if self._web is not None:
            self._web.should_exit = True
            if self._web_thread:
                self._web_thread.join(timeout=10)
        if self.timeseries is not None:
            self.timeseries.stop()  # after ingest: its last records are indexed
        self.vault.close()
        self.store.close()
