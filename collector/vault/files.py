"""Crash-safe file primitives: what survives ``kill -9`` and power loss is decided here.

A file that must appear whole or not at all is written to a temporary name, fsynced, renamed
into place and its directory fsynced (the rename itself lives in the directory). Appends are
fsynced before anyone is told they happened.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make creations, renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` so that a crash leaves either the old state or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_durable(fh: IO[bytes], data: bytes) -> None:
    """Append and fsync: the caller may acknowledge once this returns."""
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete half-written temporary files (never renamed, so never acknowledged); return them."""
    found = sorted(folder.rglob("*" + TMP_SUFFIX)) if folder.exists() else []
    for path in found:
        path.unlink()
    return found


def lock_exclusive(path: Path) -> IO[bytes]:
    """Take the single-writer lock, or raise BlockingIOError when another process holds it."""
    fh = path.open("ab")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise
    return fh
