"""The collector's own signing key (acks, config, commands), kept in the data dir."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.keys import load_private_pem, new_private_key, private_pem, write_secret


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """Load the key at ``path``, creating it (0600) on first use."""
    if path.exists():
        return load_private_pem(path.read_text(encoding="utf-8"))
    key = new_private_key()
    write_secret(path, private_pem(key))
    return key
