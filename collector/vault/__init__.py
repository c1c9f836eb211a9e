"""The vault: the legal record of everything accepted, as a Merkle tree sealed by signed checkpoints."""

from collector.vault.frames import Entry
from collector.vault.segments import VaultError
from collector.vault.vault import Vault

__all__ = ["Entry", "Vault", "VaultError"]
