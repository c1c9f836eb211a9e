"""Tail: cut the new bytes of a log file into lines with their byte offsets, and batch them.

Like Filebeat's harvester: a line is shipped only once its newline has been written (a half-written
line waits), except when the file is finished (rotated away, deleted) and its last bytes are all
there will ever be. Lines longer than ``max_line`` are cut and the cut is recorded with the original
length; bytes that are not UTF-8 (or NUL) are decoded with replacement and their line flagged, so
a binary blob never breaks a record and never passes as text. The batches are sized by their
*encoded* JSON length, so a record always fits the outbox's per-record limit.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from dataclasses import dataclass, field
from typing import IO, Any

#: Compressed archives a rotated log may become; read when its tail must be shipped from there.
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

#: Encoded text per ``log.lines`` record at most (the outbox cuts records above 128 KiB).
BATCH_BYTES = 64 * 1024


@dataclass
class Chunk:
    """Lines read from one file in one go."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    cut: list[tuple[int, int]] = field(default_factory=list)  # (offset, original length in bytes)
    binary: list[int] = field(default_factory=list)  # offsets of lines that were not clean UTF-8
    end: int = 0  # offset after the last byte consumed
    skip: bool = False  # ``end`` lies inside an over-long line whose head was already shipped


def read_lines(fh: IO[bytes], offset: int, *, max_line: int, budget: int, skip: bool = False,
               final: bool = False) -> Chunk:
    """Read lines from ``offset`` (up to about ``budget`` bytes) of an open binary file.

    Args:
        fh: the file, opened in binary mode (plain or decompressing).
        offset: where the previous read ended.
        max_line: longest line shipped whole, in bytes; a longer one is cut to this length.
        budget: bytes to read at most this time (a big backlog is shipped over several reads).
        skip: ``offset`` is inside an over-long line already shipped: drop up to its newline.
        final: the file will not grow again; ship an unterminated last line too.
    """
    fh.seek(offset)
    data = fh.read(budget)
    chunk = Chunk(end=offset, skip=skip)
    pos = 0
    if skip:
        nl = data.find(b"\n")
        if nl < 0:
            chunk.end = offset + len(data)
            chunk.skip = not final
            return chunk
        pos, chunk.skip = nl + 1, False
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            rest = len(data) - pos
            if final and rest and len(data) < budget:
                _add(chunk, offset + pos, data[pos:], rest, max_line)
                pos = len(data)
            elif rest >= max_line:  # an over-long line still being written: ship its head now
                _add(chunk, offset + pos, data[pos:pos + max_line], rest, max_line)
                pos, chunk.skip = len(data), True
            break
        _add(chunk, offset + pos, data[pos:nl], nl - pos, max_line)
        pos = nl + 1
    chunk.end = offset + pos
    return chunk


def _add(chunk: Chunk, at: int, raw: bytes, length: int, max_line: int) -> None:
    """Append one line, cut and flagged as needed (a trailing CR of CRLF is dropped)."""
    if length > max_line:
        raw = raw[:max_line]
        chunk.cut.append((at, length))
    elif raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
        clean = "\x00" not in text
    except UnicodeDecodeError:
        text, clean = raw.decode("utf-8", errors="replace"), False
    if not clean:
        chunk.binary.append(at)
    chunk.lines.append((at, text))


def batches(chunk: Chunk, head: dict[str, Any]) -> list[dict[str, Any]]:
    """Split a chunk into ``log.lines`` payloads of at most :data:`BATCH_BYTES` encoded text.

    ``head`` carries the file's identity (source, type, path, file_key). Each payload's ``end`` is
    the offset after its last line; the last payload's is the chunk's end (skipped bytes included).
    """
    out: list[dict[str, Any]] = []
    lines: list[list[Any]] = []
    size = 0
    for at, text in chunk.lines:
        n = len(json.dumps(text, ensure_ascii=False).encode()) + 16
        if lines and size + n > BATCH_BYTES:
            out.append(_payload(head, lines, chunk, at))
            lines, size = [], 0
        lines.append([at, text])
        size += n
    if lines:
        out.append(_payload(head, lines, chunk, chunk.end))
    return out


def _payload(head: dict[str, Any], lines: list[list[Any]], chunk: Chunk, end: int) -> dict[str, Any]:
    """One record's data; ``cut`` and ``binary`` only when they say something."""
    offsets = {at for at, _ in lines}
    data = dict(head, lines=lines, end=end)
    cut = [[at, n] for at, n in chunk.cut if at in offsets]
    binary = [at for at in chunk.binary if at in offsets]
    if cut:
        data["cut"] = cut
    if binary:
        data["binary"] = binary
    return data


def open_compressed(path: str) -> IO[bytes] | None:
    """A decompressing reader for a ``.gz``/``.bz2``/``.xz`` archive, None for other names."""
    for ext, opener in OPENERS.items():
        if path.endswith(ext):
            return opener(path, "rb")  # type: ignore[no-any-return]
    return None
