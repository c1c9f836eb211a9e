"""Camera watcher: is every registered camera on and streaming? (粤应急规〔2023〕3号 二(四), 三(二)5)

Each camera in the collector-signed inventory is probed up the RTSP ladder of
:mod:`agent.watchers.rtsp`. Inside an exam window of its room (start − ``lead_minutes`` to end)
every ``interval_exam`` s, with an L3 stream sample at window entry and then every
``sample_every`` s (staggered per camera so they do not all sample at once; after a stalled
sample, at every probe until it recovers); outside windows every ``interval_idle`` s up to L2.
Probes run on a bounded thread pool from the watcher's own scheduler thread; ``collect()`` only
returns the current view, so the runtime loop is never held up by a slow camera.

Judgement (debounce, fault classes, reboots, events) lives in :mod:`agent.watchers.camera_state`;
blindness in :mod:`agent.watchers.camera_sight`; PTZ position of Hikvision cameras inside exam
windows in :mod:`agent.watchers.camera_ptz`; room coverage (an exam room with no working camera) in
:mod:`agent.watchers.camera_rooms`. Whether a camera *must* be on is for the rules.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from agent.watchers import camera_onvif, camera_ptz, camera_rooms, rtsp
from agent.watchers.camera_ptz import PtzTrack
from agent.watchers.camera_sight import Sight, witnesses
from agent.watchers.camera_state import CamerasView, Track, step
from agent.watchers.credentials import lookup, read_credentials
from agent.watchers.digest import DigestClient
from protocol.inventory import Device, Inventory
from protocol.schedule import Session, windows

log = logging.getLogger("venueguard.agent.cameras")

#: Sub-stream paths: sampling the main stream would cost the camera an extra full-rate encode slot.
VENDOR_STREAMS = {"hikvision": "/Streaming/Channels/102", "dahua": "/cam/realmonitor?channel=1&subtype=1"}


class CamerasWatcherSection(BaseModel):
    """[watchers.cameras]: RTSP/ONVIF probes of the registered cameras."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    username: str = Field("", description="RTSP user for every camera (the config file is root-only, 0600).")
    password: str = Field("", description="RTSP password for every camera.")
    credentials_file: Path | None = Field(None, description='JSON {"<mac>": {"username": …, "password": …}}, mode 0600; overrides per camera.')
    default_stream: str = Field("", description="RTSP path for generic/ONVIF cameras whose inventory entry has no stream.")
    rtsp_port: int = Field(554, ge=1, le=65535, description="RTSP port of the cameras.")
    interval_exam: float = Field(15.0, gt=0, description="Seconds between probes inside an exam window.")
    interval_idle: float = Field(60.0, gt=0, description="Seconds between probes (L0–L2) outside exam windows.")
    sample_seconds: float = Field(3.0, gt=0, le=30, description="Seconds of RTP read in an L3 sample.")
    sample_every: float = Field(60.0, gt=0, description="Seconds between L3 samples of a camera inside exam windows.")
    lead_minutes: float = Field(15.0, ge=0, description="Exam windows open this long before the session starts.")
    down_after: int = Field(3, ge=1, description="Consecutive failures before a camera fault is reported.")
    up_after: int = Field(2, ge=1, description="Consecutive successes before a faulty camera is up again.")
    gateway: str = Field("", description="Exam-LAN gateway IP, a witness for agent.blind (empty: recorders only).")
    gateway_port: int = Field(0, ge=0, le=65535, description="TCP port to connect on the gateway (0 = ICMP echo).")
    timeout: float = Field(3.0, gt=0, description="Seconds per RTSP step, per witness check and for ONVIF.")
    concurrency: int = Field(16, ge=1, le=256, description="Cameras probed at the same time at most.")
    ptz_tolerance: float = Field(10.0, ge=0, description="PTZ change per axis (tenths of a degree / of zoom) that is a move.")


@dataclass
class _Slot:
    """Scheduling state of one camera."""

    due: float
    exam: bool = False
    next_sample: float = float("inf")
    busy: bool = False


@dataclass
class CamerasWatcher:
    """Probes cameras on its own threads; ``collect()`` returns the judged view."""

    inventory: Callable[[], Inventory | None] = lambda: None
    sessions: Callable[[], tuple[Session, ...]] = tuple
    recorder_sees: Callable[[str], bool | None] = lambda mac: None
    username: str = ""
    password: str = ""
    credentials_file: Path | None = None
    default_stream: str = ""
    rtsp_port: int = 554
    interval_exam: float = 15.0
    interval_idle: float = 60.0
    sample_seconds: float = 3.0
    sample_every: float = 60.0
    lead_minutes: float = 15.0
    down_after: int = 3
    up_after: int = 2
    gateway: str = ""
    gateway_port: int = 0
    timeout: float = 3.0
    concurrency: int = 16
    ptz_tolerance: float = 10.0
    interval: float = 1.0  # how often the runtime collects the view; probing has its own clock
    background: bool = True  # False: no scheduler thread (the readiness check calls check_now itself)
    probe: Callable[..., rtsp.ProbeResult] = rtsp.probe
    read_ptz: Callable[[DigestClient], dict[str, float] | None] = camera_ptz.read_position
    name: str = "cameras"
    news: threading.Event = field(default_factory=threading.Event)

    def init(self) -> None:
        """Validate options, read credentials, start the scheduler."""
        if self.sample_seconds + 4 * self.timeout > 120:
            raise ValueError("option watchers.cameras.timeout: sample_seconds + 4 × timeout must stay under 120 s")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("option watchers.cameras.down_after/up_after must be >= 1")
        self._credentials = (read_credentials(self.credentials_file, "watchers.cameras.credentials_file")
                             if self.credentials_file else {})
        self._tracks: dict[str, Track] = {}
        self._slots: dict[str, _Slot] = {}
        self._ptz: dict[str, PtzTrack] = {}  # cameras inside an exam window with a PTZ reading
        self._ptz_clients: dict[str, DigestClient] = {}  # kept per camera: its Digest nonce is reused
        self._ptz_skip: set[str] = set()  # no PTZ for us this window (404, refused login)
        self._rooms: dict[str, dict[str, Any]] = {}  # the last coverage judged
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sight = Sight(self.timeout)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="camera-probe")
        if self.background:
            threading.Thread(target=self._loop, name="camera-scheduler", daemon=True).start()

    def restore(self, view: dict[str, Any] | None) -> None:
        """Take the statuses of the last run (the persisted view), so a camera still down after an
        agent restart is not reported down a second time, and one that recovered meanwhile is up."""
        self._restored = {m: c for m, c in ((view or {}).get("cameras") or {}).items() if c.get("status") != "unknown"}

    def _new_track(self, dev: Device) -> Track:
        track = Track(_identity(dev, self._path(dev), self.rtsp_port))
        prev = getattr(self, "_restored", {}).pop(dev.mac, None)
        if prev is not None:
            track.status, track.since, track.data = prev["status"], prev.get("since"), prev.get("data") or {}
        return track

    def stop(self) -> None:
        """Stop scheduling; probes in flight end within their timeouts."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def collect(self) -> CamerasView:
        """The current view of every registered camera, their PTZ episodes and the rooms' coverage."""
        now = time.time()
        cameras = _cameras(self.inventory())
        open_rooms = camera_rooms.open_windows(self.sessions(), now, self.lead_minutes * 60)
        with self._lock:
            by_room: dict[str, list[dict[str, Any]]] = {}
            for mac, dev in cameras.items():
                t = self._tracks.get(mac)
                by_room.setdefault(dev.room, []).append({"mac": mac, "name": dev.name, "state": t.status if t else "unknown",
                                                         "since": t.since if t else None})
            self._rooms = camera_rooms.judge(open_rooms, by_room, self._rooms)
            return CamerasView({m: t.to_json() for m, t in self._tracks.items()}, self._sight.blind,
                               {m: dict(t.last) for m, t in self._tracks.items()},
                               {m: t.to_json() for m, t in self._ptz.items()}, self._rooms)

    def check_now(self, exam_rooms: set[str] | None) -> CamerasView:
        """Probe every registered camera once, now, and judge each on that one probe (no debounce).

        For the readiness check, which cannot wait ``down_after`` probes: cameras of ``exam_rooms``
        (None: every room) climb to L3 (an RTP sample, plus the ONVIF clock), the others to L2, all
        at once on the probe pool. As in normal running, failures are believed only when the agent
        is not blind; when it is, the cameras stay ``unknown`` and the view says blind.
        """
        cameras = list(_cameras(self.inventory()).values())
        levels = {d.mac: 3 if exam_rooms is None or d.room in exam_rooms else 2 for d in cameras}
        results = list(self._pool.map(lambda d: self._probe_result(d, levels[d.mac]), cameras))
        failed = any(r.outcome != rtsp.OK for r in results)
        blind = self._sight.ensure(self._witnesses(), after=time.time()) if failed else None
        with self._lock:
            for dev, result in zip(cameras, results):
                track = self._tracks.get(dev.mac) or self._tracks.setdefault(dev.mac, self._new_track(dev))
                if blind is None:
                    sees = self.recorder_sees(dev.mac) if result.outcome == rtsp.DOWN else None
                    step(track, result, 1, 1, sees)
                else:
                    track.last = result.evidence()
        return self.collect()

    # -- scheduling ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._tick(time.time())
            except Exception:  # noqa: BLE001 - a bad tick is logged; the next one retries
                log.exception("camera scheduling failed")

    def _tick(self, now: float) -> None:
        cameras = _cameras(self.inventory())
        sessions = list(self.sessions())
        with self._lock:
            for mac in (set(self._tracks) | set(self._ptz)) - set(cameras):
                self._tracks.pop(mac, None)
                self._slots.pop(mac, None)
                self._ptz.pop(mac, None)
        for mac, dev in cameras.items():
            slot = self._slots.setdefault(mac, _Slot(due=now + _stagger(mac) * min(self.interval_exam, 5.0)))
            exam = bool(windows(sessions, dev.room, now, self.lead_minutes * 60))
            if exam and not slot.exam:
                slot.due, slot.next_sample = now, now  # the full ladder once at window entry
            if not exam and slot.exam:
                self._leave_window(mac)
            slot.exam = exam
            if slot.busy or now < slot.due:
                continue
            track = self._tracks.get(mac)
            resample = track is not None and "stalled" in (track.status, track.pending)
            level = 3 if exam and (now >= slot.next_sample or resample) else 2
            if level == 3 and now >= slot.next_sample:
                first = slot.next_sample == slot.due
                slot.next_sample = now + self.sample_every + (_stagger(mac) * self.sample_every if first else 0)
            slot.due = now + (self.interval_exam if exam else self.interval_idle)
            slot.busy = True
            self._pool.submit(self._probe_one, dev, slot, level, exam)
        if now - self._sight.checked_at >= self.interval_exam:
            self._pool.submit(self._sight.ensure, self._witnesses(), now)

    def _probe_result(self, dev: Device, level: int) -> rtsp.ProbeResult:
        """Climb the ladder to ``level``; an L3 probe of a camera with an HTTP side also reads its clock."""
        user, password = self._creds(dev.mac)
        result = self.probe(dev.ip, self.rtsp_port, self._path(dev), user, password, level, self.sample_seconds,
                            self.timeout)
        if level == 3 and dev.http_port and dev.vendor in ("onvif", "hikvision", "dahua"):
            result.clock_offset = camera_onvif.clock_offset(dev.ip, dev.http_port, self.timeout)
        return result

    def _probe_one(self, dev: Device, slot: _Slot, level: int, exam: bool = False) -> None:
        try:
            result = self._probe_result(dev, level)
            user, password = self._creds(dev.mac)
            position = self._position(dev, user, password) if exam else None
            self._judge(dev, result, position, slot)
        except Exception:  # noqa: BLE001 - one camera's surprise must not stop the others
            log.exception("probing camera %s failed", dev.mac)
        finally:
            slot.busy = False

    def _position(self, dev: Device, user: str, password: str) -> dict[str, float] | None:
        """The PTZ position of a Hikvision camera with an HTTP port; None when unknown or unsupported."""
        if dev.vendor != "hikvision" or not dev.http_port or not dev.ip or dev.mac in self._ptz_skip:
            return None
        client = self._ptz_clients.setdefault(dev.mac, DigestClient(dev.ip, dev.http_port, user, password, self.timeout))
        try:
            return self.read_ptz(client)
        except camera_ptz.Unsupported as exc:
            log.info("camera %s: no PTZ status (%s); skipped for this exam window", dev.mac, exc)
            self._ptz_skip.add(dev.mac)
            return None

    def _leave_window(self, mac: str) -> None:
        """A closed window ends PTZ tracking silently: moving a camera between exams is no fault."""
        with self._lock:
            self._ptz.pop(mac, None)
        self._ptz_skip.discard(mac)
        self._ptz_clients.pop(mac, None)

    def _judge(self, dev: Device, result: rtsp.ProbeResult, position: dict[str, float] | None = None,
               slot: _Slot | None = None) -> None:
        """Fold a result in, unless the agent is blind: then nothing about cameras is believed."""
        was_blind = self._sight.blind is not None
        blind = self._sight.ensure(self._witnesses(), after=result.at) if result.outcome != rtsp.OK else self._sight.blind
        sees = self.recorder_sees(dev.mac) if result.outcome == rtsp.DOWN else None
        with self._lock:
            if was_blind or blind is not None:
                for t in self._tracks.values():
                    t.reset_streaks()  # failures seen while blind (or just before) prove nothing
                return
            track = self._tracks.get(dev.mac) or self._tracks.setdefault(dev.mac, self._new_track(dev))
            before = track.status
            step(track, result, self.down_after, self.up_after, sees)
            moved = False
            if position is not None and slot is not None and slot.exam:  # the window may have closed meanwhile
                ptz = self._ptz.setdefault(dev.mac, PtzTrack(dict(track.identity)))
                was = ptz.status
                ptz.fold(position, result.at, self.ptz_tolerance)
                moved = ptz.status != was
        if track.status != before or moved:
            self.news.set()

    # -- configuration helpers -----------------------------------------------------------------

    def _witnesses(self) -> list[Any]:
        inv = self.inventory()
        recorders = [(d.ip, d.http_port or 80) for d in inv.devices if d.role == "recorder" and d.ip] if inv else []
        return witnesses(self.gateway, self.gateway_port, recorders)

    def _creds(self, mac: str) -> tuple[str, str]:
        return lookup(self._credentials, mac, (self.username, self.password))

    def _path(self, dev: Device) -> str:
        return dev.stream or VENDOR_STREAMS.get(dev.vendor, "") or self.default_stream or "/"


def from_section(c: CamerasWatcherSection, inventory: Callable[[], Inventory | None],
                 sessions: Callable[[], tuple[Session, ...]],
                 recorder_sees: Callable[[str], bool | None] = lambda mac: None,
                 background: bool = True) -> CamerasWatcher:
    """The watcher from its config section (for ``agent.runtime.build_watchers``)."""
    options = c.model_dump(exclude={"enabled"})
    return CamerasWatcher(inventory=inventory, sessions=sessions, recorder_sees=recorder_sees, background=background,
                          **options)


def _cameras(inv: Inventory | None) -> dict[str, Device]:
    return {d.mac: d for d in inv.devices if d.role == "camera" and d.ip} if inv else {}


def _identity(dev: Device, path: str, port: int) -> dict[str, Any]:
    """Who the camera is, in every event: the URL carries no credentials."""
    return {"mac": dev.mac, "ip": dev.ip, "room": dev.room, "name": dev.name, "vendor": dev.vendor,
            "channel": dev.channel, "url": f"rtsp://{dev.ip}:{port}{path}"}


def _stagger(mac: str) -> float:
    """A stable fraction in [0, 1) per camera, to spread probes and samples over the interval."""
    return (zlib.crc32(mac.encode()) % 1000) / 1000
