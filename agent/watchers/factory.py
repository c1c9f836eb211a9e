"""Building the enabled watchers from the agent's config: one place for the service and the check.

The runtime (:func:`agent.runtime.build_watchers`) and the readiness check
(:mod:`agent.readiness`) both make their watchers here, so the check looks with exactly the code
and options the service watches with.
"""

from __future__ import annotations

import datetime
from typing import Callable

from agent.config import AgentConfig
from agent.outbox import Outbox, OutboxReader
from agent.watchers import Watcher
from agent.watchers.cameras import from_section as cameras_watcher
from agent.watchers.host import HostWatcher, ScriptedInterfaces, read_psutil
from agent.watchers.isolation import IsolationWatcher
from agent.watchers.lan import LanWatcher
from agent.watchers.logmanifest import LogSource
from agent.watchers.logs import LogsWatcher
from agent.watchers.recorders import RecordersWatcher
from protocol.inventory import Inventory
from protocol.schedule import Session


def make_watchers(cfg: AgentConfig, inventory: Callable[[], Inventory | None],
                  outbox: Outbox | OutboxReader | None = None,
                  sessions: Callable[[], tuple[Session, ...]] = tuple, oneshot: bool = False) -> list[Watcher]:
    """The enabled watchers, not yet initialised.

    ``oneshot`` makes them for the readiness check: no background threads of their own (it calls
    their ``check_now``) and no inotify; ``outbox`` may then be an :class:`OutboxReader`, since
    the check only reads the logs manifest.
    """
    watchers: list[Watcher] = []
    host = cfg.watchers.host
    if host.enabled:
        read = ScriptedInterfaces(host.scenario) if host.scenario else read_psutil
        watchers.append(HostWatcher(interval=host.interval, include=host.include, exclude=host.exclude, read=read,
                                    exam_subnets=host.exam_subnets, forbidden_ports=host.forbidden_ports,
                                    forbid_ssh=host.forbid_ssh, tools_file=host.tools_file, inventory=inventory))
    lan = cfg.watchers.lan
    if lan.enabled:
        watchers.append(LanWatcher(interfaces=lan.interfaces, subnets=lan.subnets, inventory=inventory,
                                   interval=lan.interval, sweep_interval=lan.sweep_interval, sweep_rate=lan.sweep_rate,
                                   missing_after=lan.missing_after, flip_window=lan.flip_window))
    rec = cfg.watchers.recorders
    recorders = (RecordersWatcher(inventory=inventory, background=not oneshot, **rec.model_dump(exclude={"enabled"}))
                 if rec.enabled else None)
    if recorders is not None:
        watchers.append(recorders)
    cams = cfg.watchers.cameras
    if cams.enabled:
        # A camera the recorder still sees while the agent does not is a path problem, not "off".
        sees = recorders.sees if recorders is not None else (lambda _mac: None)
        watchers.append(cameras_watcher(cams, inventory, sessions, sees, background=not oneshot))
    iso = cfg.watchers.isolation
    if iso.enabled:
        watchers.append(IsolationWatcher(targets=iso.targets, interval=iso.interval, timeout=iso.timeout))
    if cfg.watchers.logs.enabled:
        watchers.append(_logs_watcher(cfg, outbox, inotify=not oneshot))
    return watchers


def _logs_watcher(cfg: AgentConfig, outbox: Outbox | OutboxReader | None, inotify: bool = True) -> LogsWatcher:
    """The logs watcher from its section; the install date counts from local midnight."""
    c = cfg.watchers.logs
    install = None
    if c.install_date is not None:
        install = datetime.datetime.combine(c.install_date, datetime.time()).timestamp()
    sources = [LogSource(s.name, s.type, tuple(s.paths), tuple(s.exclude)) for s in c.sources]
    return LogsWatcher(sources=sources, outbox=outbox, interval=c.interval, rescan_interval=c.rescan_interval,
                       max_line_bytes=c.max_line_bytes, read_bytes=c.read_bytes, start_at=c.start_at,
                       rotation_patterns=list(c.rotation_patterns), close_inactive=c.close_inactive,
                       retention_years=c.retention_years, retention_grace_days=c.retention_grace_days,
                       install_date=install, inotify=inotify)
