"""Append-only segment files: naming, rotation, and recovery of a torn tail after a crash.

A segment is named after its first leaf index (``seg-000000001234.log``) and holds whole frames
(see :mod:`collector.vault.frames`). A new segment is born atomically with its first batch
(temp + fsync + rename + directory fsync), so a crash during rotation leaves either no new
segment or a complete one. Later batches are appended and fsynced; a crash there can only leave
an unfinished frame at the very end of the last segment, which :func:`recover` cuts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from collector.vault import frames
from collector.vault.files import append_durable, atomic_write, fsync_dir
from collector.vault.merkle import CompactRange

log = logging.getLogger("venueguard.collector.vault")

SEGMENT_BYTES = 64 << 20
SEGMENT_SECONDS = 86_400.0


class VaultError(Exception):
    """The vault cannot be used as it is; the message says where and why."""


def name(first: int) -> str:
    """File name of the segment whose first leaf is ``first``."""
    return f"seg-{first:012d}.log"


def listing(root: Path) -> list[tuple[int, Path]]:
    """``(first leaf index, path)`` of every segment, in order."""
    return sorted((int(p.stem.split("-")[1]), p) for p in root.glob("seg-*.log"))


@dataclass
class Tail:
    """What recovery found at the end of the vault."""

    cut_bytes: bytes = b""
    cut_segment: str = ""
    cut_offset: int = 0
    last_path: Path | None = None
    last_first_t: float = 0.0


def recover(root: Path, tree: CompactRange) -> Tail:
    """Extend ``tree`` (resumed from the last checkpoint) with the leaves written after it.

    An unreadable remainder at the end of the last segment, past every sealed leaf, is a torn
    write: it is cut and returned. Anything else out of place is tampering: VaultError.
    """
    sealed, segs, tail = tree.size, listing(root), Tail()
    reached = 0  # one past the highest whole leaf seen
    start = max([k for k, (first, _) in enumerate(segs) if first <= sealed] or [0])
    for k, (_, path) in enumerate(segs[start:], start):
        buf = path.read_bytes()
        items = list(frames.parse(buf))
        for n, item in enumerate(items):
            if isinstance(item, frames.Damage):
                if k != len(segs) - 1 or n != len(items) - 1 or reached < sealed:
                    raise VaultError(f"{path.name} offset {item.offset}: {item.reason} before the end of the vault — "
                                     "tampering, not a crash; run `venueguard-collector vault verify`")
                _cut(path, buf, item.offset, tail)
                continue
            reached = max(reached, item.i + 1)
            if item.i >= sealed:
                if item.i != tree.size or item.stored != item.computed.hex():
                    raise VaultError(f"{path.name} offset {item.offset}: leaf {item.i} is out of place or altered "
                                     f"(expected leaf {tree.size}); run `venueguard-collector vault verify`")
                tree.append(item.computed)
        if k == len(segs) - 1 and items and isinstance(items[0], frames.Frame):
            tail.last_path, tail.last_first_t = path, items[0].t
    if reached < sealed:
        raise VaultError(f"the vault holds {reached} leaves but checkpoint sealed {sealed}: TRUNCATED")
    return tail


def _cut(path: Path, buf: bytes, offset: int, tail: Tail) -> None:
    """Cut an unfinished frame; keep its bytes for the RECOVERY leaf's evidence."""
    tail.cut_bytes, tail.cut_segment, tail.cut_offset = buf[offset:], path.name, offset
    log.warning("vault %s: cutting %d bytes of an unfinished frame at offset %d (never acknowledged)",
                path.name, len(buf) - offset, offset)
    if offset == 0:
        path.unlink()
        fsync_dir(path.parent)
        return
    with path.open("r+b") as fh:
        fh.truncate(offset)
        os.fsync(fh.fileno())


class Writer:
    """Appends batches to the last segment, rotating by size or age first."""

    def __init__(self, root: Path, tail: Tail, segment_bytes: int, segment_seconds: float) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.path = tail.last_path
        self.first_t = tail.last_first_t
        self._fh: IO[bytes] | None = None

    def write(self, data: bytes, first: int, first_t: float, now: float) -> None:
        """Make ``data`` (whole frames, leaves from ``first``) durable."""
        if self.path is None or self._full(now):
            self.close()
            path = self.root / name(first)
            atomic_write(path, data)
            self.path, self.first_t = path, first_t
            return
        if self._fh is None:
            self._fh = self.path.open("ab")
        start = self._fh.tell()
        try:
            append_durable(self._fh, data)
        except OSError:
            self._fh.truncate(start)  # never leave half a batch for the next append to follow
            raise

    def _full(self, now: float) -> bool:
        """Rotate when the segment reached its size or age: purge works segment by segment."""
        size = self._fh.tell() if self._fh is not None else self.path.stat().st_size  # type: ignore[union-attr]
        return size >= self.segment_bytes or now - self.first_t >= self.segment_seconds

    def close(self) -> None:
        """Close the open segment."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
