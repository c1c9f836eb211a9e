"""Per-agent sequence ledger: which seqs the collector holds, which are missing.

``acked`` is the highest seq below which nothing is missing (what the agent may delete);
``above`` holds seqs that arrived past a hole. Holes are re-requested in every ack and reported
as ``seq.gap`` events only when they outlive a grace period, so a transient reorder is no noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

#: Missing ranges listed in one ack, at most.
MAX_MISSING_RANGES = 20


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
    gaps_seen: dict[int, float] = field(default_factory=dict)  # hole start -> first noticed
    gaps_reported: dict[int, int] = field(default_factory=dict)  # hole start -> hole end

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
