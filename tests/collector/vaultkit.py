"""Builders shared by the vault tests: a real vault of signed agent envelopes, sealed by
checkpoints and witnessed, on a fake clock."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.vault import Vault
from collector.vault.verify import Report, verify_vault
from protocol import keys
from protocol.envelope import Envelope, record

T0 = 1_700_000_000.0
STEP = 30.0


@dataclass
class Kit:
    """A vault folder, its witness, the vault key and one agent's key."""

    root: Path
    witness: Path
    key: Ed25519PrivateKey = field(default_factory=keys.new_private_key)
    agent: Ed25519PrivateKey = field(default_factory=keys.new_private_key)
    now: float = T0

    def open(self, **kw: object) -> Vault:
        """Open the vault on the kit's clock (small segments so there are several)."""
        opts = {"segment_bytes": 2000, "checkpoint_interval": 60.0, **kw}
        return Vault(self.root, self.key, witness=self.witness, clock=lambda: self.now, **opts)  # type: ignore[arg-type]

    def envelope(self, seq: int, agent_id: str = "a1", key: Ed25519PrivateKey | None = None) -> str:
        """A signed one-record log envelope as an agent sends it."""
        rec = record("log.lines", self.now, {"lines": [f"line {seq} 考场"]}, seq=seq)
        return Envelope(agent_id, "boot1", seq, self.now, "log", (rec,)).signed(key or self.agent).encode().decode()

    def fill(self, vault: Vault, n: int, first_seq: int = 1) -> None:
        """Append ``n`` envelopes, one per 30 s, ticking the checkpoint clock as a collector would."""
        for s in range(first_seq, first_seq + n):
            self.now += STEP
            vault.append([(self.now, "vg/v1/a1/log", self.envelope(s))])
            vault.tick()

    def verify(self, root: Path | None = None, **kw: object) -> Report:
        """Verify with the vault key, the witness and the agent key."""
        opts = {"witness": self.witness, "agent_keys": {"a1": (self.agent.public_key(), 0.0)}, **kw}
        return verify_vault(root or self.root, [self.key.public_key()], **opts)  # type: ignore[arg-type]

    def copy(self, dest: Path) -> "Kit":
        """The same vault and witness copied elsewhere (tamper on the copy, never the original)."""
        shutil.copytree(self.root, dest / "vault")
        shutil.copytree(self.witness, dest / "witness")
        return Kit(dest / "vault", dest / "witness", self.key, self.agent, self.now)


def sealed_kit(tmp: Path, n: int = 40) -> Kit:
    """A closed vault of ``n`` envelopes over several segments, everything sealed."""
    kit = Kit(tmp / "orig" / "vault", tmp / "orig" / "witness")
    vault = kit.open()
    kit.fill(vault, n)
    vault.close()
    return kit
