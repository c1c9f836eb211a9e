"""Logs watcher: the venue host's logs must be kept 3 years and never deleted (粤应急规〔2023〕3号 二(四)).

「系统日志、应用日志、数据库日志等网络日志进行留存，留存时间不低于3年，严禁留存期间执行日志删除等损坏网络系统日志的
相关操作」. The watcher keeps a manifest of every file of every configured source (live logs and their
rotated archives, see :mod:`agent.watchers.logmanifest`), reports what breaks the rule — deletion,
truncation, a move out of the set, a replaced file, retention shorter than required — apart from
ordinary rotation, and ships every new line to the collector's vault.

inotify (watchdog) makes it prompt: a change marks the set dirty and the next ``collect()`` rescans.
Correctness rests on the rescan, a diff of the persisted manifest against the disk
(:mod:`agent.watchers.logreconcile`), done at least every ``rescan_interval`` and at start, so a
change made while the agent was down is reported too, with ``while_down``.

Unlike other watchers this one writes to the outbox itself: shipped lines and the offsets that say
they were shipped are committed in one transaction (``Outbox.append_many(..., state=...)``), so a
crash can duplicate lines but never lose them. ``collect()`` still returns an observation, the
retention view, whose edges State turns into ``log.retention_short`` / ``log.retention_ok``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import IO, Any

from agent.outbox import Outbox, Pending
from agent.watchers import logmanifest as lm
from agent.watchers.logreconcile import Reconciler, Scan
from agent.watchers.tail import batches, open_compressed, read_lines

log = logging.getLogger("venueguard.agent.logs")

STATE_KEY = "logs:manifest"
YEAR = 365.25 * 86400
TYPES = ("system", "application", "database")
#: Events that break the rule (rotation does not). The manifest remembers recent ones, because once
#: reported they are no longer a difference between the manifest and the disk, and the readiness
#: check must still see them.
INCIDENT_KINDS = ("log.deleted", "log.truncated", "log.moved", "log.replaced")
INCIDENTS_KEPT = 100
INCIDENT_DAYS = 30.0


@dataclass(frozen=True)
class LogsView:
    """Per source: how many files, the oldest retained content; and retention shortfalls."""

    sources: dict[str, dict[str, Any]]
    retention_short: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """JSON form (the ``logs.snapshot`` payload)."""
        return {"sources": self.sources, "retention_short": self.retention_short}

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``log.retention_short`` when a source's retention becomes short (or is at the first run),
        ``log.retention_ok`` when it is long enough again; nothing while it stays so."""
        old = before.get("retention_short", {})
        new = self.retention_short
        return ([("log.retention_short", new[k]) for k in sorted(new.keys() - old.keys())]
                + [("log.retention_ok", old[k]) for k in sorted(old.keys() - new.keys())])


@dataclass(frozen=True)
class LogsCheck:
    """The readiness check's look at the logs (see :meth:`LogsWatcher.check_now`)."""

    events: list[tuple[str, dict[str, Any]]]  # violations found on disk, not yet reported
    view: LogsView  # retention per source
    incidents: list[dict[str, Any]]  # violations already reported: {kind, at, source, path, while_down}
    has_manifest: bool  # False: the agent never ran the watcher, so nothing earlier can be compared


@dataclass
class LogsWatcher:
    """Watches and ships the configured log sources (see the module docstring)."""

    sources: list[lm.LogSource] = field(default_factory=list)
    outbox: Outbox | None = None
    interval: float = 1.0
    rescan_interval: float = 10.0
    max_line_bytes: int = 16384
    read_bytes: int = 1 << 20
    rotation_patterns: list[str] = field(default_factory=lambda: list(lm.DEFAULT_ROTATION))
    close_inactive: float = 300.0
    start_at: str = "beginning"
    retention_years: float = 3.0
    retention_grace_days: float = 31.0
    install_date: float | None = None
    inotify: bool = True
    name: str = "logs"

    def init(self) -> None:
        """Validate options, load the manifest, start inotify."""
        self._validate()
        assert self.outbox is not None
        self._rotation = lm.compile_rotation(self.rotation_patterns)
        doc = self.outbox.load_state(STATE_KEY) or {}
        self._entries = {e["key"]: lm.Entry.from_json(e) for e in doc.get("entries", [])}
        self._oldest_seen: dict[str, float] = doc.get("oldest_seen", {})
        self._incidents: list[dict[str, Any]] = list(doc.get("incidents", []))
        self._has_manifest = bool(doc)
        self._started = time.time()
        alive = max([t for t in (doc.get("at"), self.outbox.load_state("alive")) if t is not None], default=None)
        self._while_down = {"since": alive, "until": self._started} if doc else None
        self._saved_at, self._scanned_at, self._serial = 0.0, float("-inf"), 0
        self._files: dict[str, tuple[IO[bytes], int, int]] = {}
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._moved: dict[str, str] = {}
        self._deleted: set[str] = set()
        self._observer: Any = None
        if self.inotify:
            self._start_inotify()

    def _validate(self) -> None:
        if self.outbox is None:
            raise ValueError("option watchers.logs: the watcher needs the agent's outbox")
        if not self.sources:
            raise ValueError("option watchers.logs.sources: configure at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("option watchers.logs.sources: source names must be unique")
        for s in self.sources:
            if s.type not in TYPES:
                raise ValueError(f"option watchers.logs.sources: {s.name}: type must be one of {', '.join(TYPES)}")
            if not s.paths or any(not os.path.isabs(p) for p in s.paths):
                raise ValueError(f"option watchers.logs.sources: {s.name}: paths must be absolute globs")
        if not 256 <= self.max_line_bytes <= 16384:
            raise ValueError("option watchers.logs.max_line_bytes must be in 256..16384")
        if self.start_at not in ("beginning", "end"):
            raise ValueError("option watchers.logs.start_at must be beginning or end")

    def changed(self) -> bool:
        """True when inotify saw a change that the next ``collect()`` will rescan for."""
        return self._dirty.is_set()

    def stop(self) -> None:
        """Stop inotify and close the files held open."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        for fh, _, _ in self._files.values():
            fh.close()
        self._files.clear()

    # -- one run -------------------------------------------------------------------------------

    def collect(self) -> LogsView:
        """Rescan when something changed (or the rescan is due), ship new lines, commit both."""
        assert self.outbox is not None
        now = time.time()
        work = {k: replace(e, extra=dict(e.extra)) for k, e in self._entries.items()}
        events: list[Pending] = []
        drained: list[Pending] = []
        if self._dirty.is_set() or now - self._scanned_at >= self.rescan_interval:
            work, events, drained = self._rescan(work, now)
        records = drained + self._ship(work, now)
        incidents = self._incidents_with(events, now)
        doc = self._manifest(work, now, incidents)
        changed = events or records or [e.to_json() for e in work.values()] != [
            e.to_json() for e in self._entries.values()]
        if changed or now - self._saved_at >= 5.0:
            seqs = self.outbox.append_many(events + records, state=(STATE_KEY, doc))
            if None in seqs:
                log.warning("outbox full: log offsets kept back, the lines will be read again")
                return self._view(self._entries, now)
            self._saved_at = now
            self._incidents = incidents
        self._entries = work
        self._close_unfollowed()
        return self._view(work, now)

    def check_now(self) -> LogsCheck:
        """Diff the persisted manifest against the disk without committing or shipping anything.

        For the readiness check: the running service owns the manifest and the offsets, so this
        only looks. Violations the service already reported are in the manifest's ``incidents``.
        """
        now = time.time()
        work = {k: replace(e, extra=dict(e.extra)) for k, e in self._entries.items()}
        found, others = lm.scan(self.sources, self._rotation)
        result = Reconciler(work, Scan(found, others), self._rotation, self._new_key, now,
                            start_at_end=self.start_at == "end").run()
        events = [(kind, data) for kind, data in result.events if kind in INCIDENT_KINDS]
        return LogsCheck(events, self._view(result.entries, now), list(self._incidents), self._has_manifest)

    def _incidents_with(self, events: list[Pending], now: float) -> list[dict[str, Any]]:
        """The remembered violations of the last ``INCIDENT_DAYS``, plus those among ``events``."""
        kept = [i for i in self._incidents if now - i["at"] <= INCIDENT_DAYS * 86400]
        kept += [{"kind": p.kind, "at": p.at, "source": p.data.get("source"), "path": p.data.get("path"),
                  "while_down": bool(p.data.get("while_down"))} for p in events if p.kind in INCIDENT_KINDS]
        return kept[-INCIDENTS_KEPT:]

    def _rescan(self, work: dict[str, lm.Entry], now: float) -> tuple[dict[str, lm.Entry], list[Pending], list[Pending]]:
        """Diff the manifest against the disk; drain the files that left from their held handles."""
        self._dirty.clear()
        with self._lock:
            moved, self._moved = self._moved, {}
            deleted, self._deleted = self._deleted, set()
        found, others = lm.scan(self.sources, self._rotation)
        scan = Scan(found, others, moved, deleted, self._held_path)
        first = self._scanned_at == float("-inf")
        result = Reconciler(work, scan, self._rotation, self._new_key, now,
                            while_down=self._while_down if first else None,
                            start_at_end=self.start_at == "end").run()
        self._scanned_at = now
        drained: list[Pending] = []
        for e in result.gone:
            drained += self._drain(e, result.entries.get(e.key), now)
        evs = [Pending("ev", kind, now, data) for kind, data in result.events]
        return result.entries, evs, drained

    def _drain(self, e: lm.Entry, heir: lm.Entry | None, now: float) -> list[Pending]:
        """Ship what is left of a file that left the set, from the handle still held on it."""
        held = self._files.pop(e.key, None)
        if held is None or held[1:] != (e.dev, e.ino):
            if held is not None:
                held[0].close()
            return []
        fh = held[0]
        try:
            chunk = read_lines(fh, e.offset, max_line=self.max_line_bytes, budget=1 << 30, skip=e.skip, final=True)
        finally:
            fh.close()
        if heir is not None:
            heir.offset = max(heir.offset, chunk.end)
        return [Pending("log", "log.lines", now, d) for d in batches(chunk, self._head(e))]

    def _ship(self, work: dict[str, lm.Entry], now: float) -> list[Pending]:
        """New lines of every followed file, from its offset; a rotated file stops when idle."""
        out: list[Pending] = []
        for e in sorted(work.values(), key=lambda e: e.path):
            if not e.follow:
                continue
            compressed = bool(e.extra.get("compressed"))
            idle = not e.live and now - e.grew_at >= self.close_inactive
            fh = open_compressed(e.path) if compressed else self._handle(e)
            if fh is None:
                continue
            try:
                chunk = read_lines(fh, e.offset, max_line=self.max_line_bytes, budget=self.read_bytes,
                                   skip=e.skip, final=compressed or idle)
            except (OSError, EOFError, ValueError) as exc:
                log.warning("cannot read %s: %s", e.path, exc)
                continue
            finally:
                if compressed:
                    fh.close()
            out += [Pending("log", "log.lines", now, d) for d in batches(chunk, self._head(e))]
            advanced = chunk.end > e.offset
            e.offset, e.skip = chunk.end, chunk.skip
            if not e.live and not advanced and (compressed or idle):
                e.follow = False  # rotated away, fully shipped and quiet: the writer has reopened
        return out

    def _handle(self, e: lm.Entry) -> IO[bytes] | None:
        """The held handle on ``e``'s inode, opened on first use (None when it is not there)."""
        held = self._files.get(e.key)
        if held is not None and held[1:] == (e.dev, e.ino):
            return held[0]
        if held is not None:  # the key moved to a copy of the content (copytruncate): drop the old inode
            self._files.pop(e.key)[0].close()
        try:
            fh = open(e.path, "rb")
        except OSError:
            return None
        st = os.fstat(fh.fileno())
        if (st.st_dev, st.st_ino) != (e.dev, e.ino) or st.st_size < e.offset:
            fh.close()  # the path is another file now, or it shrank: the next rescan says which
            self._dirty.set()
            return None
        self._files[e.key] = (fh, e.dev, e.ino)
        return fh

    def _held_path(self, key: str) -> str | None:
        """Where a held file is now, by the kernel's link for our descriptor (Linux)."""
        held = self._files.get(key)
        if held is None:
            return None
        try:
            return os.readlink(f"/proc/self/fd/{held[0].fileno()}")
        except OSError:
            return None

    def _close_unfollowed(self) -> None:
        for key in [k for k in self._files if k not in self._entries or not self._entries[k].follow]:
            self._files.pop(key)[0].close()

    def _new_key(self, s: lm.Seen) -> str:
        """file_key: device, inode and the moment this generation was first seen (ns, hex)."""
        self._serial += 1
        return f"{s.dev}:{s.ino}:{time.time_ns() + self._serial:x}"

    @staticmethod
    def _head(e: lm.Entry) -> dict[str, Any]:
        return {"source": e.source, "type": e.type, "path": e.path, "file_key": e.key}

    # -- persisted manifest and retention ------------------------------------------------------

    def _manifest(self, work: dict[str, lm.Entry], now: float, incidents: list[dict[str, Any]]) -> dict[str, Any]:
        for e in work.values():
            self._oldest_seen[e.source] = min(self._oldest_seen.get(e.source, e.born), e.born)
        return {"v": 1, "at": now, "entries": [e.to_json() for e in work.values()], "oldest_seen": self._oldest_seen,
                "incidents": incidents}

    def _view(self, entries: dict[str, lm.Entry], now: float) -> LogsView:
        """Per source, the oldest retained content against what the rule and the install date ask."""
        sources: dict[str, dict[str, Any]] = {}
        short: dict[str, dict[str, Any]] = {}
        floor = now - self.retention_years * YEAR
        for src in self.sources:
            mine = [e for e in entries.values() if e.source == src.name]
            oldest = min(mine, key=lambda e: e.born, default=None)
            sources[src.name] = {"type": src.type, "files": len(mine), "live": sum(e.live for e in mine),
                                 "oldest_path": oldest.path if oldest else None,
                                 "oldest_at": oldest.born if oldest else None}
            fact = self._shortfall(src, oldest, floor)
            if fact is not None:
                short[src.name] = fact
        return LogsView(sources, short)

    def _shortfall(self, src: lm.LogSource, oldest: lm.Entry | None, floor: float) -> dict[str, Any] | None:
        """Why ``src`` keeps less than it must: its oldest log went, or it starts after the install."""
        seen = self._oldest_seen.get(src.name)
        oldest_at = oldest.born if oldest else None
        reason = None
        if seen is not None and (oldest_at is None or oldest_at > max(floor, seen) + 1.0):
            reason, required = "oldest_removed", max(floor, seen)
        elif self.install_date is not None and oldest_at is not None and \
                oldest_at > max(floor, self.install_date) + self.retention_grace_days * 86400:
            reason, required = "younger_than_install", max(floor, self.install_date)
        if reason is None:
            return None
        return {"source": src.name, "type": src.type, "reason": reason, "oldest_path": oldest.path if oldest else None,
                "oldest_at": oldest_at, "required_since": required, "retention_years": self.retention_years,
                "install_date": self.install_date}

    # -- inotify -------------------------------------------------------------------------------

    def _start_inotify(self) -> None:
        """Watch each folder of the sources; a change marks the set dirty, a move out is noted."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers.inotify import InotifyObserver

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in ("created", "deleted", "moved", "modified", "closed"):
                    return  # opens and reads (our own included) change nothing
                src = os.fsdecode(event.src_path)
                with watcher._lock:
                    if event.event_type == "moved":
                        watcher._moved[src] = os.fsdecode(event.dest_path or "")
                    elif event.event_type == "deleted":
                        watcher._deleted.add(src)
                watcher._dirty.set()

        logging.getLogger("watchdog").setLevel(max(logging.INFO, log.getEffectiveLevel()))  # not every inotify event
        self._observer = InotifyObserver(generate_full_events=True)
        for d in lm.watched_dirs(self.sources):
            self._observer.schedule(Handler(), d, recursive=False)
        self._observer.daemon = True
        self._observer.start()
