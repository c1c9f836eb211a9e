"""Recorder watcher: is every registered NVR on, healthy and actually recording? (always on)

粤应急规〔2023〕3号 二(四) 「确保考试点监控录像机处于常开状态」 and 三(二)2 「考试视频监控不按要求录制存档
或者缺失的」. Each recorder of the collector-signed inventory (role ``recorder``) is polled over its
vendor's HTTP API with Digest auth (:mod:`agent.watchers.isapi`, :mod:`agent.watchers.dahua`) from
a background thread, all recorders in parallel, so a dead recorder's timeouts never delay the other
watchers. ``collect()`` only judges the latest polls (:mod:`agent.watchers.recorder_view`, which
lists the events). ONVIF recorders (vendor ``onvif``) are polled over SOAP with WS-Security
(:mod:`agent.watchers.onvif_recorder`): identity, clock and recording progress only (no disks,
channel states or uptime in Profile G core).

``sees(camera)`` tells the camera watcher whether a recorder currently reports that camera online,
so a camera the agent cannot reach but the recorder still records is a path problem, not "off".
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from agent.watchers import dahua, isapi, onvif_recorder
from agent.watchers.digest import AuthFailed, DigestClient, ProbeError
from agent.watchers.credentials import lookup, read_credentials
from agent.watchers.recorder_probe import Probe, clock_offset
from agent.watchers.recorder_view import RecorderView, Tracked, judge, sees
from protocol.inventory import Device, Inventory

log = logging.getLogger("venueguard.agent.recorders")

Client = DigestClient | onvif_recorder.OnvifClient
PROBES: dict[str, Callable[[Any, tuple[float, ...]], Probe]] = {
    "hikvision": isapi.probe, "dahua": dahua.probe, "onvif": onvif_recorder.probe}
ALIVE_PATHS = {"hikvision": "/ISAPI/System/deviceInfo", "dahua": "/cgi-bin/magicBox.cgi?action=getSystemInfo",
               "onvif": onvif_recorder.DEVICE}


class RecordersWatcherSection(BaseModel):
    """[watchers.recorders]: NVR liveness, disks, channels and recording progress."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    username: str = Field("", description="API user on the recorders (a read-only operator account is enough).")
    password: str = Field("", description="Its password; prefer credentials_file, readable by the agent only.")
    credentials_file: Path | None = Field(None, description='JSON {"*" or MAC: {"username", "password"}}; overrides username/password.')
    interval: float = Field(30.0, gt=0, description="Seconds between polls of every recorder.")
    timeout: float = Field(5.0, gt=0, description="Seconds per HTTP request; at most interval.")
    down_after: int = Field(3, ge=1, description="Failed polls in a row before recorder.down (back-dated to the first).")
    up_after: int = Field(2, ge=1, description="Answered polls in a row before recorder.up.")
    max_record_lag: float = Field(300.0, gt=0, description="Seconds the newest recorded segment may end behind the recorder clock.")
    min_free_gb: float = Field(0.0, ge=0, description="Free GB on healthy disks below which recorder.disk_low (0 = off: overwrite mode keeps disks full).")
    search_window: float = Field(86400.0, gt=0, description="Seconds searched back for the newest segment when none is recent (evidence of how old).")
    auth_retry: float = Field(600.0, gt=0, description="Seconds between login attempts once credentials were rejected (devices lock accounts).")


@dataclass(frozen=True)
class RecorderCheck:
    """One readiness poll of every recorder: the judged view, and per recorder MAC its clock
    offset (device − agent, seconds), main-stream bitrates per channel (kbit/s) and disks with
    their free space (``free_mb``, which the view leaves out); None = unknown."""

    view: RecorderView
    clock_offsets: dict[str, float | None]
    bitrates: dict[str, dict[int, float] | None]
    disks: dict[str, dict[str, Any] | None]


@dataclass
class RecordersWatcher:
    """Polls the registered recorders in a background thread; ``collect()`` judges the polls."""

    inventory: Callable[[], Inventory | None] = lambda: None
    username: str = ""
    password: str = ""
    credentials_file: Path | None = None
    interval: float = 30.0
    timeout: float = 5.0
    down_after: int = 3
    up_after: int = 2
    max_record_lag: float = 300.0
    min_free_gb: float = 0.0
    search_window: float = 86400.0
    auth_retry: float = 600.0
    background: bool = True  # tests drive poll() themselves
    name: str = "recorders"
    news: threading.Event = field(default_factory=threading.Event)  # set after each poll round

    def init(self) -> None:
        """Validate options and credentials; start polling."""
        if not 0 < self.timeout <= self.interval:
            raise ValueError("option watchers.recorders.timeout must be > 0 and <= interval")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("option watchers.recorders.down_after and up_after must be >= 1")
        if self.max_record_lag <= 0 or self.search_window < self.max_record_lag:
            raise ValueError("option watchers.recorders.search_window must be >= max_record_lag > 0")
        self._credentials = self._load_credentials()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tracked: dict[str, Tracked] = {}
        self._clients: dict[str, Client] = {}
        self._auth_at: dict[str, float] = {}
        if self.background:
            threading.Thread(target=self._loop, name="recorders", daemon=True).start()

    def _load_credentials(self) -> dict[str, tuple[str, str]]:
        """``{"*" or mac: (user, password)}`` from the file, else from username/password."""
        if self.credentials_file is None:
            if not self.username:
                raise ValueError("option watchers.recorders.username: set it (or credentials_file)")
            return {"*": (self.username, self.password)}
        return read_credentials(Path(self.credentials_file), "watchers.recorders.credentials_file")

    def stop(self) -> None:
        """Stop polling (an in-flight poll ends within one timeout)."""
        self._stop.set()

    def collect(self) -> RecorderView:
        """Judge the latest polls against the inventory."""
        inv = self.inventory()
        with self._lock:
            return judge(self._recorders(inv), self._tracked, inv, self.max_record_lag, self.min_free_gb,
                         self.search_window)

    def sees(self, camera: str) -> bool | None:
        """True: a recorder reports this camera (MAC or IP) online now; False: every recorder channel
        mapped to it is offline; None: unknown (no mapping, or its recorder is not answering)."""
        inv = self.inventory()
        with self._lock:
            return sees(camera, self._recorders(inv), self._tracked, inv)

    @staticmethod
    def _recorders(inv: Inventory | None) -> list[Device]:
        return [] if inv is None else [d for d in inv.devices if d.role == "recorder"]

    # -- polling ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a failed round is logged; the next one retries
                log.exception("recorder poll round failed")
            self.news.set()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def poll(self, down_after: int | None = None) -> None:
        """Poll every registered recorder once, in parallel (``down_after`` overrides the option)."""
        devices = self._recorders(self.inventory())
        if not devices:
            return
        with ThreadPoolExecutor(max_workers=min(len(devices), 16)) as pool:
            list(pool.map(lambda d: self._poll_one(d, down_after or self.down_after), devices))

    def check_now(self, local_zone: dt.tzinfo) -> RecorderCheck:
        """Poll every recorder once, now, and judge it on that one poll (no debounce).

        The readiness check cannot wait ``down_after`` polls: a recorder that does not answer this
        once is down for the check, with the error that says why. It also reads what only the
        check needs: each recorder's clock offset and, where the vendor tells, channel bitrates
        (ISAPI ``StreamingProxy``), for the disk space the exam day will take.
        """
        self.poll(down_after=1)
        offsets: dict[str, float | None] = {}
        bitrates: dict[str, dict[int, float] | None] = {}
        disks: dict[str, dict[str, Any] | None] = {}
        for dev in self._recorders(self.inventory()):
            with self._lock:
                t = self._tracked.get(dev.mac)
                probe = t.probe if t is not None and t.state == "up" and not t.auth_error else None
            offsets[dev.mac] = clock_offset(probe, local_zone) if probe is not None else None
            bitrates[dev.mac] = self._bitrates(dev) if probe is not None and dev.vendor == "hikvision" else None
            disks[dev.mac] = probe.disks if probe is not None else None
        return RecorderCheck(self.collect(), offsets, bitrates, disks)

    def _bitrates(self, dev: Device) -> dict[int, float] | None:
        try:
            return isapi.read_bitrates(self._client(dev))
        except ProbeError:
            return None

    def _poll_one(self, dev: Device, down_after: int) -> None:
        """One recorder: full probe, or only a liveness check while its credentials are rejected."""
        now, mono = time.time(), time.monotonic()
        with self._lock:
            t = self._tracked.setdefault(dev.mac, Tracked())
        if dev.vendor not in PROBES or not dev.ip:
            with self._lock:
                t.state, t.error = "unsupported", f"vendor {dev.vendor!r} / ip {dev.ip!r} cannot be polled"
            return
        client = self._client(dev)
        try:
            if t.auth_error and mono - self._auth_at.get(dev.mac, float("-inf")) < self.auth_retry:
                client.alive(ALIVE_PATHS[dev.vendor])
                outcome: Probe | str | None = None
            else:
                outcome = PROBES[dev.vendor](client, (2 * self.max_record_lag, self.search_window))
        except AuthFailed as exc:
            self._auth_at[dev.mac] = mono
            outcome = str(exc)
        except ProbeError as exc:
            with self._lock:
                t.failed(str(exc), now, down_after)
            return
        with self._lock:
            if isinstance(outcome, Probe):
                t.answered(self.up_after)
                t.probed(outcome, mono)
            else:
                t.answered(self.up_after, auth_error=outcome or t.auth_error)

    def _client(self, dev: Device) -> Client:
        """One client per recorder (SOAP for ONVIF, else Digest HTTP), rebuilt when its address,
        credentials or vendor changed."""
        user, password = lookup(self._credentials, dev.mac, ("", ""))
        client = self._clients.get(dev.mac)
        port = dev.http_port or 80
        kind = onvif_recorder.OnvifClient if dev.vendor == "onvif" else DigestClient
        if client is None or type(client) is not kind or (
                client.host, client.port, client.username, client.password) != (dev.ip, port, user, password):
            client = self._clients[dev.mac] = kind(str(dev.ip), port, user, password, self.timeout)
        return client
