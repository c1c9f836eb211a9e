"""Collector configuration: one TOML file (or the embedded defaults), unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

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
    client_id: str = Field("venueguard-collector", description="MQTT identity; its persistent session is keyed on it.")
    public_host: str = Field("", description="Broker address written into enrollment bundles; empty = host.")
    public_port: int = Field(0, ge=0, le=65535, description="Broker port for bundles; 0 = port.")


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
    retention_years: float = Field(3.0, ge=3.0, description="Keep records at least this long; only upwards of 3 years.")


class WebSection(_Section):
    """[web]: the pages."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class CollectorConfig(_Section):
    """The whole collector configuration."""

    collector: CollectorSection = CollectorSection()
    broker: BrokerSection = BrokerSection()
    ingest: IngestSection = IngestSection()
    vault: VaultSection = VaultSection()
    web: WebSection = WebSection()

    @property
    def database_url(self) -> str:
        """The index URL, SQLite in the data dir by default."""
        return self.collector.database_url or f"sqlite:///{self.collector.data_dir / 'index.sqlite3'}"


def load(path: Path | None) -> CollectorConfig:
    """Read ``path`` (None = embedded defaults); relative paths are taken from the file's folder."""
    if path is None:
        return CollectorConfig()
    cfg = load_toml(path, CollectorConfig)
    section = cfg.collector.model_copy(update={"data_dir": path.parent / cfg.collector.data_dir})
    vault = cfg.vault
    if vault.witness_dir is not None:
        vault = vault.model_copy(update={"witness_dir": path.parent / vault.witness_dir})
    return cfg.model_copy(update={"collector": section, "vault": vault})
