"""The day-before readiness check (粤应急规〔2023〕3号 二(四); DESIGN.md PREP): every watcher once, now.

「考试点要至少提前一天做好考场考试准备，对考场计算机网络、考试服务器、监控系统和考试用计算机进行调试、检查，确保正常
运行」. The check makes fresh instances of the enabled watchers with the service's own code and
options (:func:`agent.watchers.factory.make_watchers`), asks each for one look now — through
``check_now`` where a watcher debounces (cameras: one probe up to L3; recorders: one poll; the LAN:
one sweep) — and judges every item of :data:`protocol.readiness.ITEMS`
(:mod:`agent.readiness_items`) into a :class:`~protocol.readiness.Report` with the seal baseline.

Fresh instances, not the service's: a check must not disturb the running watchers' debounce, PTZ
homes or episodes, and ``venueguard-agent check`` runs in a process of its own beside the service.
Nothing here writes: the local check reads the outbox through :class:`~agent.outbox.OutboxReader`,
and the service commits the report itself (:mod:`agent.readiness_service`).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
import zoneinfo
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from agent import readiness_items
from agent.config import AgentConfig
from agent.outbox import Outbox, OutboxReader
from agent.watchers import Watcher
from agent.watchers.cameras import CamerasWatcher
from agent.watchers.camera_state import CamerasView
from agent.watchers.factory import make_watchers
from agent.watchers.host import HostView
from agent.watchers.isolation import IsolationView
from agent.watchers.lan import LanWatcher
from agent.watchers.lan_view import LanView
from agent.watchers.logs import LogsCheck, LogsWatcher
from agent.watchers.recorders import RecorderCheck, RecordersWatcher
from protocol.inventory import Inventory
from protocol.readiness import Report
from protocol.schedule import Session

log = logging.getLogger("venueguard.agent.readiness")


class StateStore(Protocol):
    """What the check reads from the outbox: the service's :class:`Outbox` or an :class:`OutboxReader`."""

    def load_state(self, key: str) -> Any: ...

    def depth(self) -> int: ...

    def oldest_at(self) -> float | None: ...


@dataclass(frozen=True)
class ClockReading:
    """The collector's clock against the host's: ``offset`` = collector − host, seconds, measured
    at ``at`` (host clock) from a command's ``issued_at`` (``source`` "command") or an ack's
    ``sent_at`` ("ack")."""

    offset: float
    source: str
    at: float


@dataclass(frozen=True)
class Context:
    """What the check knows besides what it sees: who runs it, for which exam day, with which config."""

    agent_id: str
    round_id: int | None
    exam_day: str
    sessions: tuple[Session, ...]  # the exam day's sessions only
    inventory: Inventory | None
    config_version: int
    collector_connected: bool
    clock: ClockReading | None

    @property
    def exam_rooms(self) -> set[str] | None:
        """Rooms with an exam that day; None when there is none (then every room is checked)."""
        return {s.room for s in self.sessions} or None


@dataclass
class Seen:
    """What the watchers saw in one check. A watcher not in ``enabled`` is not configured; one in
    ``errors`` failed (its items cannot be checked); otherwise its field holds its look."""

    enabled: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    host: HostView | None = None
    lan: LanView | None = None
    cameras: CamerasView | None = None
    recorders: RecorderCheck | None = None
    isolation: IsolationView | None = None
    logs: LogsCheck | None = None
    outbox_depth: int = 0
    outbox_oldest: float | None = None
    disk_free: int = 0
    disk_total: int = 0


def exam_day(sessions: tuple[Session, ...], zone: dt.tzinfo, day: str | None, now: float) -> tuple[str, tuple[Session, ...]]:
    """The exam day (``YYYY-MM-DD``) and its sessions, in the venue's zone.

    ``day`` None (a local check): the day of the next session not yet over, else today.
    """
    if day is None:
        upcoming = sorted((s for s in sessions if s.end >= now), key=lambda s: s.start)
        day = _local_date(upcoming[0].start if upcoming else now, zone)
    return day, tuple(s for s in sessions if _local_date(s.start, zone) == day)


def _local_date(t: float, zone: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(t, zone).date().isoformat()


def run_check(cfg: AgentConfig, ctx: Context, store: StateStore) -> Report:
    """Run every enabled watcher once and judge every item; never raises for a watcher's failure."""
    started = time.time()
    seen = gather(cfg, ctx, store)
    items = readiness_items.judge(cfg, ctx, seen, time.time())
    return Report(ctx.agent_id, ctx.round_id, ctx.exam_day, round(started, 3), round(time.time(), 3), items,
                  readiness_items.baseline(ctx, seen), ctx.config_version, ctx.collector_connected)


def gather(cfg: AgentConfig, ctx: Context, store: StateStore) -> Seen:
    """One look by each enabled watcher, all at once; a watcher that fails is noted, not fatal."""
    seen = Seen()
    watchers = make_watchers(cfg, lambda: ctx.inventory, store, lambda: ctx.sessions, oneshot=True)  # type: ignore[arg-type]
    seen.enabled = {w.name for w in watchers}
    zone = zoneinfo.ZoneInfo(cfg.readiness.timezone)
    try:
        started = [w for w in watchers if _init(w, seen)]
        with ThreadPoolExecutor(max_workers=max(len(started), 1), thread_name_prefix="readiness") as pool:
            futures: dict[str, Future[Any]] = {}
            for w in sorted(started, key=lambda w: w.name != "recorders"):  # cameras ask the recorders
                futures[w.name] = pool.submit(_look, w, cfg, ctx, zone, futures.get("recorders"))
            for name, fut in futures.items():
                _store(seen, name, fut)
    finally:
        for w in watchers:
            stop = getattr(w, "stop", None)
            if stop is not None:
                stop()
    seen.outbox_depth, seen.outbox_oldest = store.depth(), store.oldest_at()
    usage = shutil.disk_usage(_existing(cfg.agent.data_dir))
    seen.disk_free, seen.disk_total = usage.free, usage.total
    return seen


def _init(w: Watcher, seen: Seen) -> bool:
    """Initialise one watcher; a failure (a bad option, no raw-socket permission) is noted."""
    try:
        w.init()
        return True
    except Exception as exc:  # noqa: BLE001 - one watcher's failure makes its items unknown, no more
        log.warning("readiness: watcher %s cannot start: %s", w.name, exc)
        seen.errors[w.name] = f"{type(exc).__name__}: {exc}"
        return False


def _look(w: Watcher, cfg: AgentConfig, ctx: Context, zone: dt.tzinfo, recorders: Future[Any] | None) -> Any:
    """One watcher's look for the check: ``check_now`` where it debounces, else ``collect``."""
    if isinstance(w, CamerasWatcher):
        if recorders is not None:
            recorders.exception()  # wait: a camera the recorder still sees is a path problem, not "off"
        return w.check_now(ctx.exam_rooms)
    if isinstance(w, RecordersWatcher):
        return w.check_now(zone)
    if isinstance(w, LanWatcher):
        return w.check_now(cfg.readiness.lan_wait)
    if isinstance(w, LogsWatcher):
        return w.check_now()
    return w.collect()


def _store(seen: Seen, name: str, fut: Future[Any]) -> None:
    try:
        setattr(seen, name, fut.result())
    except Exception as exc:  # noqa: BLE001 - reported as the item's "could not check"
        log.warning("readiness: watcher %s failed: %s", name, exc, exc_info=True)
        seen.errors[name] = f"{type(exc).__name__}: {exc}"


def _existing(path: Any) -> Any:
    """The data folder, or its nearest existing parent (a check before the service ever ran)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def local_context(cfg: AgentConfig, agent_id: str, reader: OutboxReader, day: str | None = None,
                  now: float | None = None) -> Context:
    """The context of ``venueguard-agent check``: the last good signed config kept in the outbox,
    and the collector's clock from the last ack the service received, when recent enough."""
    now = time.time() if now is None else now
    saved = reader.load_state("config") or {}
    inventory = Inventory.from_json(saved["inventory"]) if saved.get("inventory") else None
    sessions = tuple(Session.from_json(s) for s in saved.get("sessions", []))
    day, today = exam_day(sessions, zoneinfo.ZoneInfo(cfg.readiness.timezone), day, now)
    return Context(agent_id, None, day, today, inventory, inventory.version if inventory else 0, False,
                   ack_clock(reader, cfg.readiness.clock_max_age, now))


def ack_clock(store: StateStore | Outbox, max_age: float, now: float) -> ClockReading | None:
    """The collector − host offset the uplink measured at the last ack, if not older than ``max_age``."""
    doc = store.load_state("collector_clock")
    if not doc or now - float(doc["at"]) > max_age:
        return None
    return ClockReading(float(doc["offset"]), "ack", float(doc["at"]))


CheckFn = Callable[[AgentConfig, Context, StateStore], Report]
"""The check as the service calls it (tests may put a stand-in)."""
