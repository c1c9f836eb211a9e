"""The vault: every accepted envelope and shipped log line, as leaves of an RFC 6962 Merkle tree
in append-only segment files, sealed by signed checkpoints every minute.

One process writes (an exclusive lock enforces it). ``append`` returns only after fsync, so the
collector may acknowledge then. ``tick`` writes a checkpoint when one is due, even when nothing
arrived, so a silent vault is distinguishable from a stopped one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.vault import checkpoints, frames, segments
from collector.vault.files import lock_exclusive, remove_temporaries
from collector.vault.frames import Entry
from collector.vault.segments import SEGMENT_BYTES, SEGMENT_SECONDS, VaultError
from protocol.envelope import canonical_json

if TYPE_CHECKING:
    from collector.vault.purge import PurgeResult

log = logging.getLogger("venueguard.collector.vault")

CHECKPOINT_INTERVAL = 60.0


class Vault:
    """The vault under ``root``.

    Args:
        root: the vault folder (segments, ``checkpoints/``, ``purged/``).
        key: the vault signing key; without it no checkpoint is written (read-mostly use, tests).
        witness: a second folder that receives a copy of every checkpoint.
        segment_bytes, segment_seconds: rotate the segment at this size or age.
        checkpoint_interval: seconds between checkpoints written by :meth:`tick`.
        clock: time source (tests pass a fake one).
    """

    def __init__(self, root: Path, key: Ed25519PrivateKey | None = None, *, witness: Path | None = None,
                 segment_bytes: int = SEGMENT_BYTES, segment_seconds: float = SEGMENT_SECONDS,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL, clock: Callable[[], float] = time.time) -> None:
        self.root, self.key, self.witness = root, key, witness
        self.checkpoint_interval, self.clock = checkpoint_interval, clock
        root.mkdir(parents=True, exist_ok=True)
        if any(root.glob("seg-*.jsonl")):
            raise VaultError(f"{root} holds a hash-chain vault of the old format (seg-*.jsonl); this version "
                             "does not read it: archive it and start a new vault folder")
        try:
            self._lock = lock_exclusive(root / ".lock")
        except BlockingIOError as exc:
            raise VaultError(f"vault {root} is open in another process (the running collector?)") from exc
        self.cp_folder = root / checkpoints.FOLDER
        remove_temporaries(root)
        if witness is not None:
            remove_temporaries(witness)
        try:
            self._cp = checkpoints.latest(self.cp_folder)
            self._tree = checkpoints.resume(self._cp)
        except (ValueError, KeyError, TypeError) as exc:
            self._lock.close()
            raise VaultError(f"the latest checkpoint is unreadable ({exc}); run `venueguard-collector vault verify`") from exc
        try:
            tail = segments.recover(root, self._tree)
        except VaultError:
            self._lock.close()
            raise
        self._writer = segments.Writer(root, tail, segment_bytes, segment_seconds)
        if witness is not None:
            checkpoints.sync_witness(self.cp_folder, witness)
        self.repaired_bytes = len(tail.cut_bytes)
        if tail.cut_bytes:
            self._record_recovery(tail)

    # -- the ingest path -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._tree.size

    @property
    def head(self) -> str:
        """Current Merkle root (hex)."""
        return self._tree.root().hex()

    @property
    def sealed(self) -> int:
        """Leaves covered by the latest checkpoint."""
        return 0 if self._cp is None else int(self._cp["size"])

    def append(self, items: list[tuple[float, str, str]]) -> list[int]:
        """Append ``(received_at, topic, payload)`` items, fsync, and return their leaf indexes."""
        if not items:
            return []
        first = self._tree.size
        parts, hashes = [], []
        for k, (t, topic, payload) in enumerate(items):
            data, h = frames.encode(first + k, t, topic, payload)
            parts.append(data)
            hashes.append(h)
        self._writer.write(b"".join(parts), first, items[0][0], self.clock())
        for h in hashes:
            self._tree.append(h)
        return list(range(first, first + len(items)))

    def tick(self, now: float | None = None) -> bool:
        """Write a checkpoint when ``checkpoint_interval`` has passed since the last; True if written."""
        now = self.clock() if now is None else now
        if self.key is None:
            return False
        if self._cp is not None and now - float(self._cp["time"]) < self.checkpoint_interval:
            return False
        self.checkpoint(now)
        return True

    def checkpoint(self, now: float | None = None) -> dict[str, Any]:
        """Seal every leaf so far with a signed checkpoint, copied to the witness."""
        if self.key is None:
            raise VaultError("no vault key: checkpoints cannot be signed")
        doc = checkpoints.make(self.key, self._cp, self._tree, self.clock() if now is None else now,
                               self.checkpoint_interval)
        checkpoints.write(self.cp_folder, self.witness, doc)
        self._cp = doc
        return doc

    def entries(self, start: int = 0, internal: bool = False) -> Iterator[Entry]:
        """Leaves with index >= ``start`` in order; the vault's own RECOVERY/PURGE leaves only
        when ``internal`` (the index has no rows for them)."""
        segs = segments.listing(self.root)
        for k, (_, path) in enumerate(segs):
            if k + 1 < len(segs) and segs[k + 1][0] <= start:
                continue
            for item in frames.parse(path.read_bytes()):
                if isinstance(item, frames.Damage):
                    raise VaultError(f"{path.name} offset {item.offset}: {item.reason}")
                if item.i >= start and (internal or not item.topic.startswith(frames.VAULT_TOPIC)):
                    yield item.entry()

    def append_note(self, topic: str, doc: dict[str, Any], now: float) -> int:
        """Append a signed vault note (RECOVERY, PURGE) as a leaf; unsigned without a key."""
        note = frames.sign_note(self.key, doc) if self.key is not None else {**doc, "key": "", "sig": ""}
        (index,) = self.append([(now, topic, canonical_json(note).decode())])
        return index

    def purge(self, now: float | None = None, years: float = 3.0) -> "PurgeResult":
        """Remove segments older than ``years`` (see :mod:`collector.vault.purge`)."""
        from collector.vault.purge import purge

        return purge(self, self.clock() if now is None else now, years)

    def verify(self) -> int:
        """Verify everything (see :mod:`collector.vault.verify`); return the leaf count or raise
        VaultError listing the problems."""
        from collector.vault.verify import verify_vault

        trusted = [self.key.public_key()] if self.key is not None else []
        report = verify_vault(self.root, trusted, witness=self.witness)
        if report.problems:
            raise VaultError("; ".join(str(p) for p in report.problems[:20]))
        return report.size

    def close(self, seal: bool = True) -> None:
        """Seal the tail with a last checkpoint (when keyed and anything is unsealed), close files."""
        if seal and self.key is not None and self.size > self.sealed:
            self.checkpoint()
        self._writer.close()
        self._lock.close()

    # -- internals -----------------------------------------------------------------------------

    def _record_recovery(self, tail: segments.Tail) -> None:
        """A signed RECOVERY leaf saying what was cut, then a checkpoint sealing it."""
        now = self.clock()
        data = {"kind": "recovery", "at": now, "segment": tail.cut_segment, "offset": tail.cut_offset,
                "cut_bytes": len(tail.cut_bytes), "cut_sha256": hashlib.sha256(tail.cut_bytes).hexdigest(),
                "sealed_size": self.sealed}
        index = self.append_note(frames.RECOVERY_TOPIC, data, now)
        log.warning("vault recovered: leaf %d records %d bytes cut from %s", index, len(tail.cut_bytes), tail.cut_segment)
        if self.key is not None:
            self.checkpoint(now)
