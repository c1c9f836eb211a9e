"""How the collector's configuration becomes a vault: key, witness folder, rotation, agent keys.

The vault key is its own file, ``data_dir/vault.key`` (0600), apart from ``collector.key``:
the collector key signs acks and config on the wire every second, the vault key only seals
evidence, so either can be rotated or moved to an HSM without touching the other.
"""

from __future__ import annotations

import socket
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import keys
from collector.config import CollectorConfig
from collector.store import Store
from collector.store import schema
from collector.vault.vault import Vault
from collector.vault.verify import AgentKeys
from protocol.keys import load_public_b64

VAULT_KEY = "vault.key"


def vault_dir(cfg: CollectorConfig) -> Path:
    """The vault folder."""
    return cfg.collector.data_dir / "vault"


def vault_roots(cfg: CollectorConfig) -> dict[str, Path]:
    """Every vault this collector can read, by id: its own and the cluster's others ([vault] roots)."""
    return {**cfg.vault.roots, cfg.vault_id: vault_dir(cfg)}


def vault_host(cfg: CollectorConfig) -> str:
    """Who writes this collector's vault: host name and folder, as the ``vaults`` table records it."""
    return f"{socket.gethostname()}:{cfg.collector.data_dir.resolve()}"


def witness_dir(cfg: CollectorConfig) -> Path:
    """The checkpoint witness folder (configured, else beside the vault)."""
    return cfg.vault.witness_dir or cfg.collector.data_dir / "vault-witness"


def vault_key(cfg: CollectorConfig) -> Ed25519PrivateKey:
    """The vault signing key, created (0600) on first use."""
    return keys.load_or_create(cfg.collector.data_dir / VAULT_KEY)


def open_vault(cfg: CollectorConfig) -> Vault:
    """The writable vault of this configuration (the collector's single writer)."""
    v = cfg.vault
    return Vault(vault_dir(cfg), vault_key(cfg), witness=witness_dir(cfg), segment_bytes=v.segment_mb << 20,
                 segment_seconds=v.segment_hours * 3600, checkpoint_interval=v.checkpoint_interval)


def agent_keys(store: Store) -> AgentKeys:
    """Each agent's current key and when it was enrolled.

    Re-enrollment replaces the key in the registry, so a leaf signed with an earlier key is
    reported UNKNOWN_KEY rather than FORGED_SIGNATURE (see the vault README note on key history).
    """
    a = schema.agents.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(a.id, a.public_key, a.enrolled_at)).all()
    return {r.id: (load_public_b64(r.public_key), float(r.enrolled_at)) for r in rows}
