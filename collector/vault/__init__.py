"""The vault: the legal record of everything accepted, append-only and hash-chained."""

from collector.vault.segments import Entry, Vault, VaultError

__all__ = ["Entry", "Vault", "VaultError"]
