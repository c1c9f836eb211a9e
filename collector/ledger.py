"""Per-agent sequence ledger: which seqs the collector holds, which are missing.

``acked`` is the highest seq below which nothing is missing (what the agent may delete);
``above`` holds seqs that arrived past a hole. Holes are re-requested in every ack and reported
as ``seq.gap`` events only when they outlive a grace period, so a transient reorder is no noise.

The ledger lives in the agent's row (``agents``); a :class:`Track` is a collector's copy of it,
valid while its ``version`` is the row's ``ledger_version``. In a cluster another collector may
have written the row since, and the copy is reloaded under the row lock before it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: Missing ranges listed in one ack, at most.
MAX_MISSING_RANGES = 20


class LedgerRow(Protocol):
    """The ledger columns of an ``agents`` row (collector.store.AgentRow has them)."""

    acked_seq: int
    above: list[int]
    boot: str | None
    online: bool
    last_heartbeat: float | None
    heartbeat_interval: float | None
    clock_skewed: bool
    gaps: dict[str, int]
    ledger_version: int


@dataclass
class Track:
    """What the collector knows about one agent while ingesting."""

    agent_id: str
    venue_id: str
    key: Ed25519PublicKey
    revoked: bool = False
    acked: int = 0
    above: set[int] = field(default_factory=set)
    boot: str | None = None
    online: bool = False
    last_heartbeat: float = 0.0
    heartbeat_interval: float = 10.0
    skewed: bool = False
    gaps_seen: dict[int, float] = field(default_factory=dict)  # hole start -> first noticed (this collector)
    gaps_reported: dict[int, int] = field(default_factory=dict)  # hole start -> hole end
    version: int | None = 0  # the row's ledger_version this copy matches; None = reload before use

    def load(self, row: "LedgerRow") -> None:
        """Take the ledger from the agent's row (another collector wrote it since)."""
        self.acked, self.above = int(row.acked_seq), {int(s) for s in row.above}
        self.boot, self.online = row.boot, bool(row.online)
        self.last_heartbeat = row.last_heartbeat or 0.0
        self.heartbeat_interval = row.heartbeat_interval or 10.0
        self.skewed = bool(row.clock_skewed)
        self.gaps_reported = {int(first): int(last) for first, last in row.gaps.items()}
        self.version = int(row.ledger_version)

    def row_values(self) -> dict[str, Any]:
        """The ledger columns of the agent's row, as this copy has them."""
        return {"acked_seq": self.acked, "above": sorted(self.above), "boot": self.boot, "online": self.online,
                "last_heartbeat": self.last_heartbeat or None, "heartbeat_interval": self.heartbeat_interval,
                "clock_skewed": self.skewed, "gaps": {str(k): v for k, v in sorted(self.gaps_reported.items())}}

    def holds(self, seq: int) -> bool:
        """True when ``seq`` is already stored (or staged in this batch)."""
        return seq <= self.acked or seq in self.above

    def add(self, seq: int) -> None:
        """Note ``seq`` as stored and advance the contiguous watermark."""
        if seq == self.acked + 1:
            self.acked = seq
            while self.acked + 1 in self.above:
                self.acked += 1
                self.above.discard(self.acked)
        elif seq > self.acked:
            self.above.add(seq)

    def missing(self) -> list[tuple[int, int]]:
        """Holes below the highest seq received, as inclusive ranges."""
        out: list[tuple[int, int]] = []
        prev = self.acked
        for seq in sorted(self.above):
            if seq > prev + 1:
                out.append((prev + 1, seq - 1))
            prev = seq
        return out
