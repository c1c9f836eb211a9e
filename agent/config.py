"""Agent configuration: one TOML file, validated so that a typo is an error naming the option."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.watchers.logmanifest import DEFAULT_ROTATION
from agent.watchers.cameras import CamerasWatcherSection
from agent.watchers.recorders import RecordersWatcherSection
from protocol.settings import ConfigError, load_toml

__all__ = ["AgentConfig", "ConfigError", "load"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSection(_Section):
    """[agent]: identity and local state."""

    bundle: Path = Field(Path("agent.bundle.json"), description="Enrollment bundle written by `venueguard-collector enroll`.")
    data_dir: Path = Field(Path("venueguard-agent-data"), description="Outbox and persisted watcher state.")
    heartbeat_interval: float = Field(10.0, gt=0, le=3600, description="Seconds between heartbeats.")
    snapshot_interval: float = Field(300.0, gt=0, description="Seconds between full snapshots of each watcher's view.")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$", description="Agent log verbosity.")


class UplinkSection(_Section):
    """[uplink]: how records reach the broker."""

    broker_host: str = Field("", description="Overrides the broker host in the bundle.")
    broker_port: int = Field(0, ge=0, le=65535, description="Overrides the broker port in the bundle (0 = bundle).")
    keepalive: int = Field(30, ge=5, le=3600, description="MQTT keepalive seconds.")
    reconnect_min: float = Field(1.0, gt=0, description="Smallest reconnect back-off, seconds.")
    reconnect_max: float = Field(60.0, gt=0, description="Largest reconnect back-off, seconds (full jitter below it).")
    ack_timeout: float = Field(15.0, gt=0, description="Seconds without ack progress before unacknowledged records are resent.")
    batch_records: int = Field(100, ge=1, le=1000, description="Records per envelope at most.")
    window_records: int = Field(2000, ge=1, description="Records sent but not yet acknowledged, at most.")


class OutboxSection(_Section):
    """[outbox]: limits of the durable queue."""

    max_records: int = Field(1_000_000, ge=100, description="Rows above which new records are dropped and counted.")
    min_free_mb: int = Field(64, ge=0, description="Free disk (MiB) below which new records are dropped and counted.")


class HostWatcherSection(_Section):
    """[watchers.host]: the host's own interfaces and addresses."""

    enabled: bool = True
    interval: float = Field(30.0, gt=0, description="Seconds between reads of the interfaces.")
    include: list[str] = Field(default_factory=list, description="Interface name globs to watch; empty = all.")
    exclude: list[str] = Field(default_factory=lambda: ["lo"], description="Interface name globs to ignore.")
    scenario: Path | None = Field(None, description="Scripted interface states (demo and tests without a LAN).")
    exam_subnets: list[str] = Field(default_factory=list, description="Exam LAN CIDRs; a route outside them is host.route_outside (empty = off).")
    forbidden_ports: list[int] = Field(default_factory=list, description="Extra TCP ports that must not listen (RDP, VNC, TeamViewer, AnyDesk and the tool list's are built in).")
    forbid_ssh: bool = Field(False, description="Also report a listener on TCP 22.")
    tools_file: Path | None = Field(None, description="Replacement for the packaged remote-control tool list.")


class LanWatcherSection(_Section):
    """[watchers.lan]: devices on the exam LAN, judged against the collector-signed inventory."""

    enabled: bool = False
    interfaces: list[str] = Field(default_factory=list, description="Exam-LAN interfaces to sniff and sweep.")
    subnets: list[str] = Field(default_factory=list, description="Exam subnets (CIDR) to sweep; at most /20 each.")
    interval: float = Field(1.0, gt=0, description="Seconds between judgements of what was seen.")
    sweep_interval: float = Field(60.0, gt=0, description="Seconds between ARP sweeps of the subnets.")
    sweep_rate: float = Field(200.0, gt=0, le=10000, description="ARP requests per second at most during a sweep.")
    missing_after: int = Field(3, ge=1, description="Sweeps a registered device may stay silent before device.missing.")
    flip_window: float = Field(600.0, gt=0, description="Seconds in which an IP's MAC going back counts as a flip-flop.")


class IsolationWatcherSection(_Section):
    """[watchers.isolation]: forbidden targets that must be unreachable from the exam host."""

    enabled: bool = False
    interval: float = Field(60.0, gt=0, description="Seconds between probe runs.")
    timeout: float = Field(3.0, gt=0, description="Seconds per probe; at most interval.")
    targets: list[str] = Field(default_factory=list, description="tcp:HOST:PORT, tcp:[v6]:PORT or icmp:HOST; only these are probed.")


class LogSourceSection(_Section):
    """One [[watchers.logs.sources]] entry: a named set of log files of one type."""

    name: str = Field(..., min_length=1, description="Source name carried by every event and shipped line.")
    type: Literal["system", "application", "database"] = Field(..., description="What kind of log (the rule's three kinds).")
    paths: list[str] = Field(..., min_length=1, description="Absolute globs of the live log files; their rotated archives are included.")
    exclude: list[str] = Field(default_factory=list, description="Globs (full path or file name) to leave out.")


class LogsWatcherSection(_Section):
    """[watchers.logs]: log deletion, truncation, moves, retention, and shipping to the vault."""

    enabled: bool = False
    interval: float = Field(1.0, gt=0, description="Seconds between runs (ship new lines; rescan when inotify saw a change).")
    rescan_interval: float = Field(10.0, gt=0, description="Seconds between full rescans even when inotify saw nothing.")
    sources: list[LogSourceSection] = Field(default_factory=list, description="The log sources to watch and ship.")
    max_line_bytes: int = Field(16384, ge=256, le=16384, description="Longer lines are cut to this and the cut is recorded.")
    read_bytes: int = Field(1 << 20, ge=65536, description="Bytes read per file per run at most (a backlog ships over several runs).")
    start_at: Literal["beginning", "end"] = Field("beginning", description="Where shipping starts in a live log seen for the first time.")
    rotation_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_ROTATION), description="Regexes of rotation suffixes (anchored with $); an `ext` group is put back.")
    close_inactive: float = Field(300.0, gt=0, description="Seconds a rotated-away file is still followed after its last growth.")
    retention_years: float = Field(3.0, ge=3.0, description="Years logs must be kept (the rule says at least 3).")
    retention_grace_days: float = Field(31.0, ge=0, description="Slack for the install-date check (a rotated file's date is its last write).")
    install_date: dt.date | None = Field(None, description="Date the host went into service; logs should reach back to it.")


class WatchersSection(_Section):
    """[watchers]: one sub-table per watcher (some sections live beside their watcher)."""

    host: HostWatcherSection = HostWatcherSection()
    lan: LanWatcherSection = LanWatcherSection()
    isolation: IsolationWatcherSection = IsolationWatcherSection()
    recorders: RecordersWatcherSection = RecordersWatcherSection()
    cameras: CamerasWatcherSection = CamerasWatcherSection()
    logs: LogsWatcherSection = LogsWatcherSection()


class ReadinessSection(_Section):
    """[readiness]: the day-before readiness check (``venueguard-agent check`` and collector commands)."""

    timezone: str = Field("Asia/Shanghai", description="Venue time zone: which sessions make the exam day; zone-less recorder clocks.")
    bitrate_mbps: float = Field(4.0, gt=0, description="Recording bitrate per exam-room camera when the recorder does not report one (Mbit/s).")
    lan_wait: float = Field(3.0, ge=0, le=60, description="Seconds to wait for late ARP answers after the check's sweep.")
    host_min_free_gb: float = Field(1.0, ge=0, description="Free space (GB) the agent's data folder must have.")
    host_min_free_percent: float = Field(5.0, ge=0, le=100, description="Free space (% of the disk) the agent's data folder must have.")
    outbox_max_age: float = Field(60.0, gt=0, description="Seconds a record may wait in the outbox before the check calls it undelivered.")
    clock_max_age: float = Field(900.0, gt=0, description="Seconds the last collector ack's clock comparison stays good for a local check.")


class AgentConfig(_Section):
    """The whole agent configuration."""

    agent: AgentSection = AgentSection()
    uplink: UplinkSection = UplinkSection()
    outbox: OutboxSection = OutboxSection()
    watchers: WatchersSection = WatchersSection()
    readiness: ReadinessSection = ReadinessSection()


def load(path: Path) -> AgentConfig:
    """Read and validate ``path``; relative paths in it are taken from the file's folder."""
    cfg = load_toml(path, AgentConfig)
    if cfg.uplink.reconnect_max < cfg.uplink.reconnect_min:
        raise ConfigError(f"{path}: option uplink.reconnect_max must be >= uplink.reconnect_min")
    try:
        zoneinfo.ZoneInfo(cfg.readiness.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{path}: option readiness.timezone: unknown time zone {cfg.readiness.timezone!r}") from exc
    return _resolve(cfg, path.parent)


def _resolve(cfg: AgentConfig, base: Path) -> AgentConfig:
    """Make the file's relative paths absolute against ``base``."""
    agent = cfg.agent.model_copy(update={"bundle": base / cfg.agent.bundle, "data_dir": base / cfg.agent.data_dir})
    host = cfg.watchers.host
    for option in ("scenario", "tools_file"):
        if getattr(host, option) is not None:
            host = host.model_copy(update={option: base / getattr(host, option)})
    rec = cfg.watchers.recorders
    if rec.credentials_file is not None:
        rec = rec.model_copy(update={"credentials_file": base / rec.credentials_file})
    cams = cfg.watchers.cameras
    if cams.credentials_file is not None:
        cams = cams.model_copy(update={"credentials_file": base / cams.credentials_file})
    watchers = cfg.watchers.model_copy(update={"host": host, "recorders": rec, "cameras": cams})
    return cfg.model_copy(update={"agent": agent, "watchers": watchers})
