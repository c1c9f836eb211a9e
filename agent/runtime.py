"""Runtime: wires watchers → state → outbox → uplink and schedules the watchers.

The one-way flow of DESIGN.md: watchers return observations, state turns them into events, the
outbox commits them, the uplink sends them. Nothing flows back except acks into the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from agent import __version__
from agent.config import AgentConfig
from agent.outbox import Outbox, Pending
from agent.readiness_service import ReadinessService
from agent.remote_config import RemoteConfig
from agent.state import State
from agent.uplink import Uplink, new_boot
from agent.watchers import Watcher
from agent.watchers.factory import make_watchers
from protocol.inventory import Inventory
from protocol.keys import Bundle
from protocol.schedule import Session

log = logging.getLogger("venueguard.agent")


def build_watchers(cfg: AgentConfig, inventory: Callable[[], Inventory | None], outbox: Outbox | None = None,
                   sessions: Callable[[], tuple[Session, ...]] = tuple) -> list[Watcher]:
    """Instantiate and validate the enabled watchers; ValueError names a bad option.

    ``inventory`` and ``sessions`` give the collector-signed inventory and exam sessions in force;
    ``outbox`` is for the logs watcher, which commits shipped lines together with their offsets.
    """
    watchers = make_watchers(cfg, inventory, outbox, sessions)
    for w in watchers:
        restore = getattr(w, "restore", None)
        if restore is not None and outbox is not None:
            restore(outbox.load_state(w.name))  # statuses of the last run: no repeat events after a restart
        w.init()
    return watchers


@dataclass
class _Slot:
    watcher: Watcher
    due: float = 0.0


class Runtime:
    """One agent run (one ``boot``)."""

    def __init__(self, cfg: AgentConfig, bundle: Bundle, watchers: list[Watcher] | None = None) -> None:
        """Open the outbox and build the watchers (ValueError names a bad watcher option)."""
        self.cfg = cfg
        self.bundle = bundle
        self.boot = new_boot()
        self.outbox = Outbox(cfg.agent.data_dir / "outbox.sqlite3", max_records=cfg.outbox.max_records,
                             min_free_bytes=cfg.outbox.min_free_mb << 20)
        self.state = State(self.outbox, cfg.agent.snapshot_interval)
        self.remote = RemoteConfig(self.outbox, bundle.agent_id, bundle.collector_public_key)
        self.readiness = ReadinessService(cfg, bundle, self.remote, self.outbox, self._commit)
        self.uplink = Uplink(bundle, cfg.uplink, self.outbox, cfg.agent.heartbeat_interval, self.boot,
                             on_config=lambda payload: self._commit(self.remote.receive(payload)),
                             config_version=lambda: self.remote.version, on_command=self.readiness.receive)
        if watchers is None:
            watchers = build_watchers(cfg, self.remote.inventory, self.outbox, self.remote.sessions)
        self._slots = [_Slot(w) for w in watchers]
        self._stop = threading.Event()
        # Watchers that can tell when something new happened (a ``news`` event) wake the loop at
        # once instead of waiting for their interval: a device is judged ms after it speaks.
        self._wake = threading.Event()
        for w in watchers:
            if hasattr(w, "news"):
                w.news = self._wake  # type: ignore[attr-defined]

    def run(self) -> None:
        """Run until :meth:`stop`; records survive any kind of exit in the outbox."""
        self._commit([self._started_event()])
        self.uplink.start()
        while not self._stop.is_set():
            now = time.monotonic()
            woken = self._wake.is_set()
            self._wake.clear()
            for slot in self._slots:
                if now >= slot.due or (woken and hasattr(slot.watcher, "news")):
                    slot.due = now + slot.watcher.interval
                    self._commit(self._run_watcher(slot.watcher))
            next_due = min((s.due for s in self._slots), default=now + 1.0)
            self._wake.wait(max(0.0, min(next_due - time.monotonic(), 1.0)))
        for slot in self._slots:
            stop = getattr(slot.watcher, "stop", None)
            if stop is not None:
                stop()  # watchers with threads of their own (sniffers, sweeps)
        self.readiness.wait(timeout=30.0)  # a check in progress commits its report before the outbox closes
        self.uplink.stop(flush_seconds=2.0)
        self.outbox.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()
        self._wake.set()

    def _run_watcher(self, watcher: Watcher) -> list[Pending]:
        """Collect once; a failing watcher becomes a ``watcher.error`` event, not a dead agent."""
        try:
            obs = watcher.collect()
        except Exception as exc:  # noqa: BLE001 - any watcher failure is reported, never fatal
            log.exception("watcher %s failed", watcher.name)
            return self.state.error(watcher.name, f"{type(exc).__name__}: {exc}")
        return self.state.recovered(watcher.name) + self.state.observe(watcher.name, obs)

    def _commit(self, events: list[Pending]) -> None:
        if events:
            self.outbox.append_many(events)
            self.uplink.wake.set()

    def _started_event(self) -> Pending:
        """``agent.started`` says which run this is and since when the previous one was silent."""
        data = {"boot": self.boot, "version": __version__, "venue_id": self.bundle.venue_id,
                "previous_boot": self.outbox.load_state("boot"), "last_alive": self.outbox.load_state("alive")}
        self.outbox.save_state("boot", self.boot)
        return Pending("ev", "agent.started", time.time(), data)
