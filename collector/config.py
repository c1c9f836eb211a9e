"""Collector configuration: one TOML file (or the embedded defaults), unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.settings import ConfigError, load_toml

__all__ = ["CollectorConfig", "ConfigError", "load"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectorSection(_Section):
    """[collector]: where data lives."""

    data_dir: Path = Field(Path("venueguard-data"), description="Vault, keys and the default SQLite index.")
    database_url: str = Field("", description="SQLAlchemy URL of the index; empty = SQLite in data_dir.")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")


class BrokerSection(_Section):
    """[broker]: the MQTT broker the collector subscribes through."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("", description="MQTT identity; its persistent session is keyed on it. Empty = "
                           "venueguard-collector, or venueguard-collector-<node_id> in a cluster.")
    session_expiry: int = Field(0, ge=0, description="Seconds the broker keeps the collector's session (and queues "
                                "for it) while it is away; 0 = 7 days alone, 300 s in a cluster (a dead member keeps "
                                "taking its share of messages until its session expires; agents resend those).")
    public_host: str = Field("", description="Broker address written into enrollment bundles; empty = host.")
    public_port: int = Field(0, ge=0, le=65535, description="Broker port for bundles; 0 = port.")
    tls_ca: Path | None = Field(None, description="CA certificate the broker's server certificate must chain to "
                                "(mutual TLS; `pki init` writes data_dir/pki/ca.crt); empty = plain MQTT.")
    tls_cert: Path | None = Field(None, description="The collector's client certificate; its CN is the broker "
                                  "identity the ACL grants the collector's rights to (data_dir/pki/collector.crt).")
    tls_key: Path | None = Field(None, description="Private key of tls_cert (data_dir/pki/collector.key, mode 0600).")

    @model_validator(mode="after")
    def _tls_complete(self) -> "BrokerSection":
        """Mutual TLS needs all three files; a half-set one would fail only at connect time."""
        given = [f for f in ("tls_ca", "tls_cert", "tls_key") if getattr(self, f) is not None]
        if given and len(given) != 3:
            raise ValueError(f"{', '.join(given)} set: tls_ca, tls_cert and tls_key go together")
        return self

    @property
    def tls(self) -> bool:
        """Whether the collector speaks mutual TLS to the broker."""
        return self.tls_cert is not None


class IngestSection(_Section):
    """[ingest]: verification and liveness."""

    deadline_factor: float = Field(3.0, ge=1, description="Offline after this many missed heartbeat intervals.")
    gap_grace: float = Field(30.0, ge=0, description="Seconds a seq hole may last before it is reported.")
    max_clock_skew: float = Field(2.0, gt=0, description="Agent clock offset (s) reported as clock skew.")
    batch_max: int = Field(1000, ge=1, description="Messages per vault fsync at most.")


class VaultSection(_Section):
    """[vault]: the 3-year legal record (DESIGN.md §5)."""

    witness_dir: Path | None = Field(None, description="Second folder that receives a copy of every checkpoint "
                                     "(production: a locked object-storage mount); empty = data_dir/vault-witness.")
    checkpoint_interval: float = Field(60.0, gt=0, le=60, description="Seconds between signed checkpoints, at most 60.")
    segment_mb: int = Field(64, ge=1, description="Rotate a segment file at this size (MB).")
    segment_hours: float = Field(24.0, gt=0, description="Rotate a segment file at this age (hours); purge removes whole segments.")
    id: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$", description="Name of this collector's vault, which every "
                    "index row's leaf refers to; empty = main, or node_id in a cluster.")
    roots: dict[str, Path] = Field(default_factory=dict, description="Folders of the other collectors' vaults by "
                                   "vault id (read-only mounts or copies), for proofs and `vault verify` in a cluster.")
    retention_years: float = Field(3.0, ge=3.0, description="Keep records at least this long; only upwards of 3 years.")


class ClusterSection(_Section):
    """[cluster]: more than one collector sharing the agents' traffic (deploy/scale-out.md)."""

    enabled: bool = Field(False, description="Join a cluster: subscribe through the broker's shared subscription "
                          "and elect one leader for rules, readiness and notices. Needs PostgreSQL.")
    node_id: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,32}$", description="This collector's name in the cluster, "
                         "unique; names its MQTT client id and its vault.")
    share_group: str = Field("vg-collectors", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                             description="MQTT v5 shared-subscription group of the cluster's collectors.")
    leader_poll_seconds: float = Field(2.0, gt=0, le=60, description="How often the leader lock is tried and checked; "
                                       "a dead leader is replaced within about this long.")

    @model_validator(mode="after")
    def _named(self) -> "ClusterSection":
        if self.enabled and not self.node_id:
            raise ValueError("enabled = true needs node_id, a name unique among the cluster's collectors (e.g. node_id = \"a\")")
        return self


class WebSection(_Section):
    """[web]: the pages."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    idle_minutes: float = Field(30.0, gt=0, le=24 * 60, description="A session unused this long ends "
                                "(background refreshes of live pages do not count as use).")
    session_hours: float = Field(12.0, gt=0, le=24 * 7, description="A session ends this long after login, "
                                 "however active: a stolen cookie is not good for ever.")
    secure_cookies: bool = Field(False, description="Mark cookies Secure even on plain http, e.g. behind a TLS "
                                 "proxy that does not forward the scheme (on https they are Secure anyway).")
    login_max_failures: int = Field(5, ge=1, description="Failed logins for one user name within "
                                    "login_window_minutes that lock it for lockout_minutes.")
    login_max_failures_ip: int = Field(20, ge=1, description="Failed logins from one client address within "
                                       "login_window_minutes that lock the address (many staff may share one "
                                       "NAT address, so this is higher than per name).")
    login_window_minutes: float = Field(15.0, gt=0, description="Failures older than this are not counted.")
    lockout_minutes: float = Field(15.0, gt=0, description="How long a user name or address stays locked.")


class RulesSection(_Section):
    """[rules]: the rulebook."""

    folder: Path | None = Field(None, description="Folder of rule files; empty = the rules/ folder shipped beside the code.")
    reload_seconds: float = Field(5.0, gt=0, description="How often the folder is checked for edited rule files.")


class ScheduleSection(_Section):
    """[schedule]: the exam plan."""

    timezone: str = Field("Asia/Shanghai", description="Time zone of the times written in imported plans.")


class ReadinessSection(_Section):
    """[readiness]: the day-before readiness check (粤应急规〔2023〕3号 二(四)) and the seal after it."""

    time: str = Field("14:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time ([schedule] timezone) "
                      "on the day before an exam day when every venue with exams that day is asked to run the check.")
    deadline_minutes: float = Field(30.0, gt=0, le=24 * 60, description="Agents must report within this many minutes "
                                    "of the command; a silent agent then counts as 无报告 (no report).")
    scheduled: bool = Field(True, description="Open rounds by the exam schedule; false = on demand only "
                            "(`venueguard-collector readiness run`).")


class NotifySection(_Section):
    """[notify]: where new and changed cases are announced (at most once per case state change)."""

    mqtt_topic: str = Field("vg/v1/authority/cases", description="MQTT topic for case notices; empty = none.")
    min_severity: str = Field("violation", pattern="^(violation|warning|notice)$",
                              description="Announce cases of this severity and above.")
    webhooks: list[str] = Field(default_factory=list, description="http(s) URLs that receive every notice as a "
                                "JSON POST; a 2xx answer counts as delivered.")
    email_to: list[str] = Field(default_factory=list, description="E-mail recipients of every notice (one message "
                                "to all); needs smtp_host and smtp_from.")
    smtp_host: str = Field("", description="Mail server that sends the notices.")
    smtp_port: int = Field(25, ge=1, le=65535, description="Mail server port (587 with starttls, 465 with ssl).")
    smtp_security: str = Field("none", pattern="^(none|starttls|ssl)$",
                               description="none, starttls (upgrade after connecting) or ssl (TLS from the start).")
    smtp_from: str = Field("", description="Sender address of the notices.")
    smtp_user: str = Field("", description="Mail server login; empty = no login.")
    smtp_password_file: Path | None = Field(None, description="File holding the mail server password (read at each "
                                            "send, so it never sits in this config); give an absolute path.")
    retry_seconds: float = Field(30.0, gt=0, description="A failed notice is retried after this many seconds "
                                 "times the attempts so far.")
    max_attempts: int = Field(10, ge=1, description="After this many failed attempts a notice is marked failed "
                              "(kept, with its last error).")
    send_timeout: float = Field(10.0, gt=0, le=120, description="Seconds one SMTP, webhook or MQTT send may take.")
    web_base_url: str = Field("", description="Address of the pages as recipients reach them, e.g. "
                              "https://venueguard.example.cn; notices link to <web_base_url>/cases/<id>.")

    @field_validator("webhooks", "web_base_url")
    @classmethod
    def _http_urls(cls, value: list[str] | str) -> list[str] | str:
        """Only http(s) URLs with a host: anything else would fail at every send, long after startup."""
        from urllib.parse import urlsplit

        for url in [value] if isinstance(value, str) else value:
            parts = urlsplit(url)
            if url and (parts.scheme not in ("http", "https") or not parts.hostname):
                raise ValueError(f"not an http:// or https:// URL with a host: {url!r}")
        return value

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        """Catch typos in recipient addresses when the config is read, not when a case opens."""
        bad = [a for a in value if a.count("@") != 1 or not all(a.split("@")) or any(c in a for c in " ,;<>")]
        if bad:
            raise ValueError(f"not an e-mail address: {', '.join(map(repr, bad))}")
        return value

    @model_validator(mode="after")
    def _email_complete(self) -> "NotifySection":
        """E-mail needs a server and a sender, and a login needs its password file (and vice versa)."""
        if self.email_to and not (self.smtp_host and self.smtp_from):
            raise ValueError("email_to is set: smtp_host and smtp_from are needed too")
        if bool(self.smtp_user) != (self.smtp_password_file is not None):
            raise ValueError("smtp_user and smtp_password_file go together")
        return self


class InfluxSection(_Section):
    """[influx]: telemetry (RTTs, up/down, counts, outbox depth) to an InfluxDB 2.x bucket; off when url is empty.

    Telemetry is derived from the stored records, never in the ingest path: a slow or dead server
    cannot hold up ingest or acks (collector/timeseries.py)."""

    url: str = Field("", description="InfluxDB 2.x (or any /api/v2/write endpoint, e.g. VictoriaMetrics) base URL, "
                     "e.g. http://127.0.0.1:8086; empty = no telemetry.")
    org: str = Field("venueguard", min_length=1, description="InfluxDB organisation of the bucket.")
    bucket: str = Field("venueguard", min_length=1, description="Bucket written to; create it with a retention of "
                        "at least 3 years (`timeseries check` verifies it where the server offers the buckets API).")
    token_file: Path | None = Field(None, description="File holding the API token with write access to the bucket "
                                    "(read at start, so it never sits in this config); give an absolute path; "
                                    "empty = no token (VictoriaMetrics without auth).")
    batch_size: int = Field(5000, ge=1, le=100_000, description="Points per write request at most.")
    flush_seconds: float = Field(10.0, gt=0, le=3600, description="Points wait at most this long before a write.")
    spool_max: int = Field(100_000, ge=100, description="Points held in memory while the server is slow or down "
                           "(Telegraf's metric_buffer_limit). Points from stored records beyond it wait in the store "
                           "and catch up later; heartbeat samples beyond it are dropped and logged as a telemetry gap.")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds one write request may take.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """An http(s) URL with a host, checked at start rather than at the first write."""
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"not an http:// or https:// URL with a host: {value!r} (e.g. http://127.0.0.1:8086)")
        return value.rstrip("/")


class CollectorConfig(_Section):
    """The whole collector configuration."""

    collector: CollectorSection = CollectorSection()
    broker: BrokerSection = BrokerSection()
    ingest: IngestSection = IngestSection()
    vault: VaultSection = VaultSection()
    web: WebSection = WebSection()
    rules: RulesSection = RulesSection()
    schedule: ScheduleSection = ScheduleSection()
    notify: NotifySection = NotifySection()
    readiness: ReadinessSection = ReadinessSection()
    influx: InfluxSection = InfluxSection()
    cluster: ClusterSection = ClusterSection()

    @model_validator(mode="after")
    def _cluster_on_postgresql(self) -> "CollectorConfig":
        """A cluster's collectors share the ingest ledger and the leader lock in the database."""
        if self.cluster.enabled and not self.collector.database_url.startswith("postgresql"):
            raise ValueError("[cluster] enabled = true needs PostgreSQL: set [collector] database_url = "
                             "\"postgresql+psycopg://user@host/db\" (the same database on every collector)")
        return self

    @property
    def database_url(self) -> str:
        """The index URL, SQLite in the data dir by default."""
        return self.collector.database_url or f"sqlite:///{self.collector.data_dir / 'index.sqlite3'}"

    @property
    def client_id(self) -> str:
        """The MQTT client id (its persistent session is keyed on it)."""
        if self.broker.client_id:
            return self.broker.client_id
        return f"venueguard-collector-{self.cluster.node_id}" if self.cluster.enabled else "venueguard-collector"

    @property
    def session_expiry(self) -> int:
        """Seconds the broker keeps the collector's session while it is away."""
        return self.broker.session_expiry or (300 if self.cluster.enabled else 7 * 24 * 3600)

    @property
    def vault_id(self) -> str:
        """The name of this collector's vault."""
        return self.vault.id or (self.cluster.node_id if self.cluster.enabled else "main")


def load(path: Path | None) -> CollectorConfig:
    """Read ``path`` (None = embedded defaults); relative paths are taken from the file's folder."""
    if path is None:
        return CollectorConfig()
    cfg = load_toml(path, CollectorConfig)
    section = cfg.collector.model_copy(update={"data_dir": path.parent / cfg.collector.data_dir})
    vault = cfg.vault
    if vault.witness_dir is not None:
        vault = vault.model_copy(update={"witness_dir": path.parent / vault.witness_dir})
    broker = cfg.broker.model_copy(update={f: path.parent / getattr(cfg.broker, f) for f in ("tls_ca", "tls_cert", "tls_key")
                                           if getattr(cfg.broker, f) is not None})
    vault = vault.model_copy(update={"roots": {k: path.parent / v for k, v in vault.roots.items()}})
    return cfg.model_copy(update={"collector": section, "vault": vault, "broker": broker})
