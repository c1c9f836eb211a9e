"""The log manifest: which files make up each log source, what each was, and how far it is shipped.

A file is known by its device and inode, not its name, so a rotated or moved file is recognised
wherever it went, and by a hash of its head, so a new file on a reused inode is not mistaken for
the old one. The manifest is persisted with the shipped lines (Filebeat's registry plays this part)
and diffed at start, which is how deletions made while the agent was down are caught.

The watched set of a source is every file matching one of its globs (a *live* log, tailed) plus
every file named like a rotation of such a file (an *archive*: ``app.log.1``, ``app.log.2.gz``,
``app.log-20261128``, ``app-20261128.log``…), because rotated archives are retained logs too:
deleting ``app.log.7.gz`` within 3 years is exactly what 粤应急规〔2023〕3号 二(四) forbids.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import lzma
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.watchers.tail import open_compressed

HEAD_BYTES = 4096

#: Suffixes (regexes anchored at the end of the name) that make a name a rotation of another; an
#: optional ``ext`` group is put back, for logrotate's ``dateext`` + ``extension`` (app-20261128.log).
DEFAULT_ROTATION = [
    r"\.\d{1,4}(\.(gz|bz2|xz|zst))?$",
    r"[-._]\d{8}(\d{2,6})?(\.(gz|bz2|xz|zst))?$",
    r"[-._]\d{4}-\d{2}-\d{2}([-_.T]\d{2}(-?\d{2}){0,2})?(\.(gz|bz2|xz|zst))?$",
    r"[-._]\d{8}(\d{2,6})?(?P<ext>\.[A-Za-z]\w{0,7})(\.(gz|bz2|xz|zst))?$",
    r"[-._]\d{4}-\d{2}-\d{2}(?P<ext>\.[A-Za-z]\w{0,7})(\.(gz|bz2|xz|zst))?$",
]


@dataclass(frozen=True)
class LogSource:
    """One configured source: a name, its kind (system | application | database) and globs."""

    name: str
    type: str
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Seen:
    """A file of the watched set as found by one scan."""

    path: str
    source: str
    type: str
    dev: int
    ino: int
    size: int
    mtime: float
    live: bool


@dataclass
class Entry:
    """What the manifest remembers of one file (one generation of one inode)."""

    key: str  # file_key: stable across rename and rotation, new for new content
    path: str
    source: str
    type: str
    dev: int
    ino: int
    size: int
    mtime: float
    head_len: int
    head: str  # SHA-256 hex of the first head_len (<= 4 KiB) bytes
    offset: int  # shipped up to here
    live: bool  # matches a source glob (tailed); False: a rotated archive
    follow: bool  # tailed: live, or rotated away but still written to until the writer reopens
    born: float  # earliest time its content is known to exist (mtime at first sight, inherited)
    grew_at: float  # last time its size changed (a rotated file stops being followed when idle)
    skip: bool = False  # offset is inside an over-long line already shipped
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Persisted form."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Entry":
        """Inverse of :meth:`to_json`."""
        return cls(**doc)

    def evidence(self) -> dict[str, Any]:
        """The fields every ``log.*`` event carries about the file as it was."""
        return {"source": self.source, "type": self.type, "path": self.path, "file_key": self.key,
                "inode": self.ino, "dev": self.dev, "size_before": self.size, "head_sha256": self.head,
                "head_bytes": self.head_len, "shipped_offset": self.offset}


def compile_rotation(patterns: list[str]) -> list[re.Pattern[str]]:
    """Compile rotation suffixes; ValueError names the bad one."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise ValueError(f"option watchers.logs.rotation_patterns: {p!r}: {exc}") from exc
    return out


def rotation_bases(name: str, rotation: list[re.Pattern[str]]) -> list[str]:
    """The live names ``name`` could be a rotation of (``app.log.2.gz`` → ``app.log``)."""
    out = []
    for rx in rotation:
        m = rx.search(name)
        if m and m.start() > 0:
            ext = m.groupdict().get("ext") or ""
            out.append(name[:m.start()] + ext)
    return out


def same_base(a: str, b: str, rotation: list[re.Pattern[str]]) -> bool:
    """True when ``b`` is a rotation of ``a``, or both are rotations of one live name."""
    na, nb = os.path.basename(a), os.path.basename(b)
    if os.path.dirname(a) != os.path.dirname(b):
        return False
    ba, bb = set(rotation_bases(na, rotation)) | {na}, set(rotation_bases(nb, rotation))
    return bool(ba & bb)


def watched_dirs(sources: list[LogSource]) -> list[str]:
    """Directories holding each glob's files (globs in the directory part are expanded)."""
    dirs: set[str] = set()
    for src in sources:
        for pattern in src.paths:
            d = os.path.dirname(pattern) or "."
            dirs.update(p for p in (glob.glob(d) if glob.has_magic(d) else [d]) if os.path.isdir(p))
    return sorted(dirs)


def scan(sources: list[LogSource], rotation: list[re.Pattern[str]]) -> tuple[dict[tuple[int, int], Seen], dict[tuple[int, int], str]]:
    """Every file of the watched set by (dev, inode), and every other file in the same folders.

    The others let a file renamed out of the set (``app.log`` → ``app.log.bak``) be found again.
    """
    found: dict[tuple[int, int], Seen] = {}
    others: dict[tuple[int, int], str] = {}
    for d in watched_dirs(sources):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue  # gone between listing and stat: the next scan sees it gone
            ident = (st.st_dev, st.st_ino)
            hit = _classify(e.path, sources, rotation)
            if hit is None:
                others[ident] = e.path
            elif ident not in found:
                src, live = hit
                found[ident] = Seen(e.path, src.name, src.type, st.st_dev, st.st_ino, st.st_size, st.st_mtime, live)
    return found, others


def _classify(path: str, sources: list[LogSource], rotation: list[re.Pattern[str]]) -> tuple[LogSource, bool] | None:
    """(source, live) for a path in the set, None outside it. An archive name wins over a glob
    that also matches it, so ``*`` does not make ``app.log.1`` a second live log."""
    d, name = os.path.split(path)
    bases = [os.path.join(d, b) for b in rotation_bases(name, rotation)]
    for src in sources:
        if any(fnmatch.fnmatch(path, x) or fnmatch.fnmatch(name, x) for x in src.exclude):
            continue
        if any(fnmatch.fnmatch(b, g) for b in bases for g in src.paths):
            return src, False
        if any(fnmatch.fnmatch(path, g) for g in src.paths):
            return src, True
    return None


def head_hash(path: str, limit: int = HEAD_BYTES) -> tuple[int, str] | None:
    """(length, SHA-256 hex) of the first ``limit`` bytes of a plain file; None when unreadable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit)
    except OSError:
        return None
    return len(data), hashlib.sha256(data).hexdigest()


def has_head(path: str, length: int, digest: str) -> bool:
    """Does ``path`` (plain or compressed) start with the ``length`` bytes hashed to ``digest``?"""
    try:
        fh = open_compressed(path) or open(path, "rb")
        with fh:
            data = fh.read(length)
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        return False
    return len(data) == length and hashlib.sha256(data).hexdigest() == digest
