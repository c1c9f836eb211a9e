"""Append-only segment files, each entry hash-chained to the one before.

An entry is one JSON line ``{"i", "t", "topic", "payload", "prev", "h"}`` where ``payload`` is
the exact envelope text as received (so its signature can be checked years later) and
``h = sha256(prev || canonical({"i","t","topic","payload"}))``. Appends are fsynced before the
collector acknowledges anything, so an acknowledged record is on disk. A torn last line (a crash
mid-write, never acknowledged) is cut off at open and the cut is reported.

This chain is the spine's vault; the Merkle tree and signed checkpoints build on it later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from protocol.envelope import canonical_json

log = logging.getLogger("venueguard.collector.vault")

GENESIS = "0" * 64
SEGMENT_BYTES = 64 << 20


class VaultError(Exception):
    """The vault does not verify; the message says where."""


@dataclass(frozen=True)
class Entry:
    """One vault entry."""

    i: int
    t: float
    topic: str
    payload: str
    prev: str
    h: str


def entry_hash(prev: str, i: int, t: float, topic: str, payload: str) -> str:
    """The chain hash of an entry."""
    body = canonical_json({"i": i, "t": t, "topic": topic, "payload": payload})
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()


class Vault:
    """Segment files under ``root``; one writer."""

    def __init__(self, root: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        root.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = 0
        self._next, self._head = self._recover()
        self._fh = None

    @property
    def size(self) -> int:
        """Number of entries."""
        return self._next

    @property
    def head(self) -> str:
        """Hash of the last entry (GENESIS when empty)."""
        return self._head

    def segments(self) -> list[Path]:
        """Segment files in order."""
        return sorted(self.root.glob("seg-*.jsonl"))

    def append(self, items: list[tuple[float, str, str]]) -> list[int]:
        """Append ``(received_at, topic, payload)`` items, fsync, and return their indexes."""
        if not items:
            return []
        lines, out = [], []
        for t, topic, payload in items:
            h = entry_hash(self._head, self._next, t, topic, payload)
            doc = {"i": self._next, "t": t, "topic": topic, "payload": payload, "prev": self._head, "h": h}
            lines.append(canonical_json(doc) + b"\n")
            out.append(self._next)
            self._head, self._next = h, self._next + 1
        fh = self._writer()
        fh.write(b"".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
        return out

    def close(self) -> None:
        """Close the open segment."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def entries(self, start: int = 0) -> Iterator[Entry]:
        """Entries with index >= ``start``, in order (no verification)."""
        segs = self.segments()
        firsts = [int(p.stem.split("-")[1]) for p in segs]
        for k, path in enumerate(segs):
            if k + 1 < len(segs) and firsts[k + 1] <= start:
                continue  # the whole segment lies before start
            with path.open("rb") as fh:
                for line in fh:
                    doc = json.loads(line)
                    if doc["i"] >= start:
                        yield Entry(**doc)

    def verify(self) -> int:
        """Re-hash the whole chain; return the entry count or raise VaultError naming the spot."""
        prev, expect = GENESIS, 0
        for path in self.segments():
            with path.open("rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    where = f"{path.name} line {lineno}"
                    try:
                        doc = json.loads(line)
                        e = Entry(**doc)
                    except (ValueError, TypeError) as exc:
                        raise VaultError(f"{where}: unreadable entry ({exc})") from exc
                    if e.i != expect:
                        raise VaultError(f"{where}: entry index {e.i}, expected {expect}")
                    if e.prev != prev:
                        raise VaultError(f"{where}: entry {e.i} does not chain to entry {e.i - 1}")
                    if entry_hash(e.prev, e.i, e.t, e.topic, e.payload) != e.h:
                        raise VaultError(f"{where}: entry {e.i} content does not match its hash")
                    prev, expect = e.h, expect + 1
        return expect

    # -- internals -----------------------------------------------------------------------------

    def _writer(self):  # noqa: ANN202 - a binary file object
        """The open segment, rotated when full; a new segment's directory entry is fsynced."""
        if self._fh is not None and self._fh.tell() >= self.segment_bytes:
            self.close()
        if self._fh is None:
            segs = self.segments()
            path = segs[-1] if segs and segs[-1].stat().st_size < self.segment_bytes else self.root / f"seg-{self._next:012d}.jsonl"
            fresh = not path.exists()
            self._fh = path.open("ab")
            if fresh:
                dir_fd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return self._fh

    def _recover(self) -> tuple[int, str]:
        """Find the chain head from the last segment, cutting a torn (unfinished) last line."""
        segs = self.segments()
        if not segs:
            return 0, GENESIS
        last = segs[-1]
        data = last.read_bytes()
        good = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
        if len(good) != len(data):
            self.repaired_bytes = len(data) - len(good)
            log.warning("vault %s: cut %d bytes of an unfinished last entry (never acknowledged)", last.name, self.repaired_bytes)
            with last.open("r+b") as fh:
                fh.truncate(len(good))
                os.fsync(fh.fileno())
        lines = good.splitlines()
        if lines:
            return _head_of(last, lines[-1])
        if len(segs) > 1:
            return _head_of(segs[-2], segs[-2].read_bytes().splitlines()[-1])
        return 0, GENESIS


def _head_of(path: Path, line: bytes) -> tuple[int, str]:
    """Next index and head hash from a segment's last line; a garbled one is an error, not a guess."""
    try:
        doc = json.loads(line)
        return int(doc["i"]) + 1, str(doc["h"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VaultError(f"{path.name}: last entry is unreadable ({exc}); the vault was altered — "
                         "run `venueguard-collector verify-vault` and investigate before appending") from exc
