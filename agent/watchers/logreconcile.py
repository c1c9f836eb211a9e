"""Reconcile: diff the manifest against a scan into ``log.*`` events and the next manifest.

One function decides every case, online (a scan a second after the change) and offline (the first
scan after a start, with ``while_down``), because inotify can miss events and the agent can be
stopped: only the diff of what was against what is can be relied on.

For each file the manifest knew (by device and inode):

- still in the set, same head, not smaller: unchanged, or renamed — to a rotation of its name
  (``log.rotated``, mode ``rename``: logrotate's ``create``), between archive numbers (silent), or
  to an unrelated name in the set (``log.moved``);
- still there but smaller, or its head changed: a copy with the old head next to it is logrotate's
  ``copytruncate`` (``log.rotated``), otherwise ``log.truncated``; either way the inode starts a
  new generation with a new file_key;
- gone from the set: found under a name outside it (``log.moved``, ``moved_to``), moved out as
  inotify or the held descriptor saw (``log.moved``), compressed into a rotation archive with the
  same head (``log.rotated``, mode ``compress``), its path now a different file (``log.replaced``),
  or else ``log.deleted``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from agent.watchers.logmanifest import HEAD_BYTES, Entry, Seen, has_head, head_hash, same_base
from agent.watchers.tail import OPENERS

Event = tuple[str, dict[str, Any]]


@dataclass
class Scan:
    """What one scan found, plus what inotify and held descriptors tell about files that left."""

    found: dict[tuple[int, int], Seen]
    others: dict[tuple[int, int], str] = field(default_factory=dict)
    moved: dict[str, str] = field(default_factory=dict)  # path moved out of the folder → dest ("" unknown)
    deleted: set[str] = field(default_factory=set)  # paths inotify saw unlinked (their inode may be reused)
    fd_path: Callable[[str], str | None] = lambda key: None  # where a held file is now (Linux /proc)


@dataclass
class Result:
    """The events, the next manifest, and the entries that left (to drain from held files)."""

    events: list[Event]
    entries: dict[str, Entry]
    gone: list[Entry]


class Reconciler:
    """One diff of the manifest against a scan (see the module docstring for the cases)."""

    def __init__(self, entries: dict[str, Entry], scan: Scan, rotation: list[re.Pattern[str]],
                 new_key: Callable[[Seen], str], now: float, *, while_down: dict[str, float] | None = None,
                 start_at_end: bool = False) -> None:
        self.old, self.scan, self.rotation, self.new_key = entries, scan, rotation, new_key
        self.now, self.while_down, self.start_at_end = now, while_down, start_at_end
        self.events: list[Event] = []
        self.entries: dict[str, Entry] = {}
        self.claimed: set[tuple[int, int]] = set()
        self.known = {(e.dev, e.ino) for e in entries.values()}

    def run(self) -> Result:
        """Diff every known file, then add the new ones."""
        broken, gone = [], []
        for e in sorted(self.old.values(), key=lambda e: e.path):
            s = self.scan.found.get((e.dev, e.ino))
            if s is None or (s.path == e.path and e.path in self.scan.deleted and not self._same_content(e, s)):
                gone.append(e)  # (a new file that got the unlinked one's inode number is a new file)
            elif self._same_content(e, s):
                self.claimed.add((s.dev, s.ino))
                self._still_there(e, s)
            else:
                self.claimed.add((s.dev, s.ino))
                broken.append((e, s))
        for e, s in broken:
            self._shrunk(e, s)
        for e in gone:
            self._left(e)
        for ident, s in sorted(self.scan.found.items(), key=lambda kv: kv[1].path):
            if ident not in self.claimed:
                self._add_new(s)
        return Result(self.events, self.entries, gone)

    # -- cases ---------------------------------------------------------------------------------

    def _same_content(self, e: Entry, s: Seen) -> bool:
        """Not smaller, and (when it changed at all) still starting with the head we hashed."""
        if s.size < e.size:
            return False
        if s.size == e.size and s.mtime == e.mtime:
            return True
        return has_head(s.path, e.head_len, e.head)

    def _still_there(self, e: Entry, s: Seen) -> None:
        """Same file: note a rename, and refresh size, mtime and a head shorter than 4 KiB."""
        if s.path != e.path:
            if e.live and not s.live and same_base(e.path, s.path, self.rotation):
                self._emit("log.rotated", e, s.size, rotated_to=s.path, mode="rename")
            elif e.live or s.live or not same_base(e.path, s.path, self.rotation):
                self._emit("log.moved", e, s.size, moved_to=s.path, within_set=True)
        n = replace(e, path=s.path, live=s.live, size=s.size, mtime=s.mtime, source=s.source, type=s.type)
        if s.size != e.size:
            n.grew_at = self.now
        if s.live:
            n.follow = True
        if e.head_len < HEAD_BYTES and s.size > e.head_len and not e.extra.get("compressed"):
            n.head_len, n.head = head_hash(s.path) or (e.head_len, e.head)
        self.entries[n.key] = n

    def _shrunk(self, e: Entry, s: Seen) -> None:
        """Smaller or rewritten in place: copytruncate when a copy with the old head exists."""
        copy = self._find_copy(e)
        if copy is not None:  # a compressed copy: rename + compress + create, the inode reused
            packed = copy.path.endswith(tuple(OPENERS))
            self._emit("log.rotated", e, s.size, rotated_to=copy.path, mode="compress" if packed else "copytruncate")
            self._continue_in(e, copy, compressed=packed)
        else:
            self._emit("log.truncated", e, s.size, unshipped_bytes=max(0, e.size - e.offset))
        self._add_new(s, offset=0)

    def _left(self, e: Entry) -> None:
        """The inode left the set: moved, compressed, replaced, or deleted."""
        dest = self._moved_to(e)
        packed = self._find_compressed(e) if dest is None else None
        if packed is not None:
            self._emit("log.rotated", e, None, rotated_to=packed.path, mode="compress")
            self._continue_in(e, packed, compressed=True)
            return
        if dest is None:
            dest = self.scan.moved.get(e.path)
            if dest and same_base(e.path, dest, self.rotation):
                dest = None  # rotated to a name of the set, then gone from it: that is a deletion
        if dest is not None:
            self._emit("log.moved", e, None, moved_to=dest or None)
            return
        now = next((s for i, s in self.scan.found.items() if s.path == e.path and i not in self.claimed), None)
        if now is not None:
            self._emit("log.replaced", e, now.size, inode_after=now.ino, head_sha256_after=_head_of(now.path))
            return
        self._emit("log.deleted", e, None, unshipped_bytes=max(0, e.size - e.offset))

    def _add_new(self, s: Seen, offset: int | None = None) -> None:
        """A file not seen before (or a new generation of one): live ones are shipped from 0."""
        head_len, head = head_hash(s.path) or (0, _EMPTY)
        if offset is None:
            offset = (s.size if self.start_at_end else 0) if s.live else s.size
        e = Entry(self.new_key(s), s.path, s.source, s.type, s.dev, s.ino, s.size, s.mtime, head_len, head,
                  offset, s.live, s.live, min(s.mtime, self.now), self.now)
        self.claimed.add((s.dev, s.ino))
        self.entries[e.key] = e

    # -- finding where a file went -------------------------------------------------------------

    def _moved_to(self, e: Entry) -> str | None:
        """Where the inode is now outside the set: another name in the folder, or (for a file we
        hold open) the path the kernel gives for our descriptor."""
        if (e.dev, e.ino) in self.scan.others:
            return self.scan.others[(e.dev, e.ino)]
        held = self.scan.fd_path(e.key)
        if held and not held.endswith(" (deleted)") and os.path.exists(held):
            return held
        return None

    def _find_copy(self, e: Entry) -> Seen | None:
        """A rotation-named file, not this inode, starting with the old head (copytruncate's copy)."""
        for ident, s in sorted(self.scan.found.items(), key=lambda kv: (kv[0] in self.known, kv[1].path)):
            if ident == (e.dev, e.ino) or s.live or not same_base(e.path, s.path, self.rotation):
                continue
            if has_head(s.path, e.head_len, e.head):
                return s
        return None

    def _find_compressed(self, e: Entry) -> Seen | None:
        """A new compressed rotation archive whose content starts with the old head."""
        for ident, s in sorted(self.scan.found.items(), key=lambda kv: kv[1].path):
            if ident in self.known or ident in self.claimed or not s.path.endswith(tuple(OPENERS)):
                continue
            if same_base(e.path, s.path, self.rotation) and has_head(s.path, e.head_len, e.head):
                return s
        return None

    def _continue_in(self, e: Entry, s: Seen, compressed: bool = False) -> None:
        """The old content lives on in ``s``: it keeps the file_key and offset, and what was not yet
        shipped is shipped from there (by the same offsets, so the collector dedupes any overlap)."""
        for k in [k for k, x in self.entries.items() if (x.dev, x.ino) == (s.dev, s.ino)]:
            del self.entries[k]
        extra = dict(e.extra, compressed=True) if compressed else dict(e.extra)
        self.entries[e.key] = Entry(e.key, s.path, s.source, s.type, s.dev, s.ino, s.size, s.mtime, e.head_len,
                                    e.head, e.offset, False, True, e.born, self.now, e.skip, extra)
        self.claimed.add((s.dev, s.ino))

    def _emit(self, kind: str, e: Entry, size_after: int | None, **more: Any) -> None:
        data = dict(e.evidence(), size_after=size_after, **more)
        if self.while_down is not None:
            data["while_down"] = self.while_down
        self.events.append((kind, data))


_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _head_of(path: str) -> str | None:
    """SHA-256 of a file's first 4 KiB, None when unreadable."""
    h = head_hash(path)
    return None if h is None else h[1]
