"""Signed checkpoints: (size, root, time, previous checkpoint hash), one small file each.

A checkpoint seals every leaf below ``size``: damage there is tampering, not a crash. Each is
written atomically (temp + fsync + rename + directory fsync) under the vault, then copied the
same way to the witness folder (production: locked object storage), so rewriting history needs
both places and the vault key. ``stack`` holds the compact-range hashes of the tree, so a restart
resumes the tree without re-reading every segment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.vault import frames
from collector.vault.files import atomic_write
from collector.vault.merkle import CompactRange
from protocol.envelope import canonical_json

log = logging.getLogger("venueguard.collector.vault")

FOLDER = "checkpoints"
PER_FOLDER = 10_000
GENESIS = "0" * 64


def path_of(folder: Path, n: int) -> Path:
    """Where checkpoint ``n`` lives (10,000 per sub-folder keeps directories small over 3 years)."""
    return folder / f"{n // PER_FOLDER:06d}" / f"cp-{n:010d}.json"


def doc_hash(doc: dict[str, Any]) -> str:
    """The hash the next checkpoint's ``prev`` names: over the whole signed document."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def make(key: Ed25519PrivateKey, prev: dict[str, Any] | None, tree: CompactRange, now: float,
         interval: float) -> dict[str, Any]:
    """A signed checkpoint of ``tree`` following ``prev``."""
    body = {
        "v": 1,
        "n": 0 if prev is None else int(prev["n"]) + 1,
        "size": tree.size,
        "root": tree.root().hex(),
        "time": round(now, 3),
        "prev": GENESIS if prev is None else doc_hash(prev),
        "interval": interval,
        "stack": [h.hex() for h in tree.stack()],
    }
    return frames.sign_note(key, body)


def write(folder: Path, witness: Path | None, doc: dict[str, Any]) -> None:
    """Write locally, then the witness copy; each whole or not at all."""
    data = canonical_json(doc) + b"\n"
    atomic_write(path_of(folder, int(doc["n"])), data)
    if witness is not None:
        atomic_write(path_of(witness, int(doc["n"])), data)


def read(path: Path) -> dict[str, Any]:
    """One checkpoint document (ValueError when unreadable)."""
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict) or not {"n", "size", "root", "time", "prev"} <= set(doc):
        raise ValueError(f"{path.name} is not a checkpoint")
    return doc


def files(folder: Path) -> list[Path]:
    """Checkpoint files in order."""
    return sorted(folder.glob("*/cp-*.json")) if folder.exists() else []


def number_of(path: Path) -> int:
    """Checkpoint number from its file name."""
    return int(path.stem.split("-")[1])


def latest(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint, or None before the first."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []
    for sub in reversed(subs):
        found = sorted(sub.glob("cp-*.json"))
        if found:
            return read(found[-1])
    return None


def sync_witness(folder: Path, witness: Path) -> int:
    """Copy checkpoints the witness lacks (a crash between the two writes); return how many."""
    have = {number_of(p) for p in files(witness)}
    copied = 0
    for path in files(folder)[-PER_FOLDER:]:
        if number_of(path) not in have:
            atomic_write(path_of(witness, number_of(path)), path.read_bytes())
            copied += 1
    if copied:
        log.warning("copied %d checkpoint(s) the witness folder lacked", copied)
    return copied


def resume(doc: dict[str, Any] | None) -> CompactRange:
    """The tree state a checkpoint describes (checked against its own root)."""
    tree = CompactRange()
    if doc is None:
        return tree
    tree.restore(int(doc["size"]), [bytes.fromhex(h) for h in doc["stack"]])
    if tree.root().hex() != doc["root"]:
        raise ValueError(f"checkpoint {doc['n']}: its tree state does not give its root")
    return tree
