"""The on-disk frame of one leaf, and signed vault notes (RECOVERY, PURGE leaves).

A frame is three lines::

    {"i":7,"n":123,"t":1700000000.5,"topic":"vg/v1/a1/ev"}     header (canonical JSON)
    <payload: exactly n bytes, the envelope text as received>
    <hex SHA-256 leaf hash>

The Merkle leaf is ``header + "\\n" + payload``: the payload is stored unescaped, so the agent's
signature can be re-checked years later and hashing runs at hashlib speed. The trailing hash line
is a commit marker (a frame without it was torn by a crash) and lets the verifier name the very
leaf that was edited when the editor did not also recompute it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import keys
from protocol.envelope import canonical_json

VAULT_TOPIC = "vault/"
RECOVERY_TOPIC = "vault/recovery"
PURGE_TOPIC = "vault/purge"
HASH_LINE = 65  # 64 hex digits + newline


@dataclass(frozen=True)
class Entry:
    """One leaf as the ingest path sees it (``payload`` is the exact text that was vaulted)."""

    i: int
    t: float
    topic: str
    payload: str
    h: str = ""


@dataclass(frozen=True)
class Frame:
    """A parsed frame with its place in the segment file."""

    offset: int
    end: int
    i: int
    t: float
    topic: str
    payload: bytes
    stored: str  # the hash line as written
    computed: bytes  # the leaf hash recomputed from the bytes

    def entry(self) -> Entry:
        """As an :class:`Entry`."""
        return Entry(self.i, self.t, self.topic, self.payload.decode("utf-8"), self.computed.hex())


@dataclass(frozen=True)
class Damage:
    """Bytes at ``offset`` that are not a frame; ``torn`` when they simply run out (a crash)."""

    offset: int
    end: int
    torn: bool
    reason: str


def encode(i: int, t: float, topic: str, payload: str) -> tuple[bytes, bytes]:
    """Frame bytes and leaf hash of one leaf."""
    body = payload.encode("utf-8")
    header = canonical_json({"i": i, "n": len(body), "t": t, "topic": topic})
    leaf = header + b"\n" + body
    h = hashlib.sha256(b"\x00" + leaf).digest()
    return leaf + b"\n" + h.hex().encode() + b"\n", h


def parse(buf: bytes, pos: int = 0) -> Iterator[Frame | Damage]:
    """Frames of a segment's bytes from ``pos``; after damage, resynchronise on the next header."""
    view = memoryview(buf)
    size = len(buf)
    while pos < size:
        item = _one(buf, view, pos)
        if isinstance(item, Frame):
            yield item
            pos = item.end
            continue
        nxt = -1 if item.torn else buf.find(b'\n{"i":', pos)
        yield Damage(item.offset, len(buf) if nxt < 0 else nxt + 1, item.torn, item.reason)
        if nxt < 0:
            return
        pos = nxt + 1


def _one(buf: bytes, view: memoryview, pos: int) -> Frame | Damage:
    """Parse the frame at ``pos``."""
    nl = buf.find(b"\n", pos)
    if nl < 0:
        return Damage(pos, len(buf), True, "unfinished header")
    try:
        head = json.loads(view[pos:nl].tobytes())
        i, n, t, topic = int(head["i"]), int(head["n"]), float(head["t"]), str(head["topic"])
    except (ValueError, KeyError, TypeError) as exc:
        return Damage(pos, nl + 1, False, f"unreadable header ({exc})")
    p1 = nl + 1 + n
    end = p1 + 1 + HASH_LINE
    if end > len(buf):
        return Damage(pos, len(buf), True, "unfinished frame")
    if buf[p1:p1 + 1] != b"\n" or buf[end - 1:end] != b"\n":
        return Damage(pos, end, False, "payload length does not match the header")
    h = hashlib.sha256(b"\x00")
    h.update(view[pos:p1])
    stored = view[p1 + 1:end - 1].tobytes().decode("ascii", "replace")
    return Frame(pos, end, i, t, topic, view[nl + 1:p1].tobytes(), stored, h.digest())


# -- signed notes ------------------------------------------------------------------------------


def sign_note(key: Ed25519PrivateKey, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` plus the signer's public key and an Ed25519 signature over the canonical rest."""
    body = {**doc, "key": keys.public_b64(key)}
    return {**body, "sig": keys.sign(key, canonical_json(body))}


def check_note(doc: dict[str, Any], trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """None when signed by a trusted vault key; else the problem label."""
    body = {k: v for k, v in doc.items() if k != "sig"}
    key = trusted.get(str(doc.get("key", "")))
    if key is None:
        return "UNKNOWN_KEY"
    if not keys.verify(key, canonical_json(body), str(doc.get("sig", ""))):
        return "FORGED_SIGNATURE"
    return None
