"""Retention: remove whole segments once their newest record and the checkpoint that sealed them
are older than the retention period (3 years, configurable upwards only).

Order matters for crash safety: (1) the leaf hashes of each segment go to a small side file in
``purged/``, so the tree stays verifiable; (2) a signed PURGE leaf lists what is removed and why;
(3) a checkpoint seals that leaf; only then (4) the segment files are unlinked. A crash anywhere
leaves either the segment still present (purge again) or an authorised, provable removal.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.vault import checkpoints, frames, segments
from collector.vault.files import atomic_write, fsync_dir
from protocol.envelope import canonical_json

if TYPE_CHECKING:
    from collector.vault.vault import Vault

MIN_RETENTION_YEARS = 3.0
YEAR = 365.25 * 86_400
FOLDER = "purged"


class PurgeRefused(Exception):
    """A purge that the retention rule forbids."""


@dataclass
class PurgeResult:
    """What a purge removed, and why the rest stays."""

    purged: list[dict[str, Any]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    leaf: int | None = None


def side_files(root: Path) -> dict[int, dict[str, Any]]:
    """``first leaf -> {"first", "count", "hashes", "notes"}`` of every purged segment; ``notes``
    keeps the whole frames of the vault's own RECOVERY/PURGE leaves."""
    found = {}
    for path in sorted((root / FOLDER).glob("seg-*.json")) if (root / FOLDER).exists() else []:
        doc = json.loads(path.read_bytes())
        found[int(doc["first"])] = doc
    return found


def purge(vault: Vault, now: float, years: float = MIN_RETENTION_YEARS) -> PurgeResult:
    """Purge what is old enough, oldest first; refuse ``years`` below the legal minimum."""
    if years < MIN_RETENTION_YEARS:
        raise PurgeRefused(f"retention {years} years is below the minimum {MIN_RETENTION_YEARS}")
    result = PurgeResult()
    cps = _Covers(checkpoints.files(vault.cp_folder))
    for first, path in segments.listing(vault.root)[:-1]:  # never the segment being written
        seg, why = _eligible(first, path, cps, now, years)
        if seg is None:
            result.kept.append(why)
            break
        result.purged.append(seg)
    if not result.purged:
        return result
    for seg in result.purged:
        doc = {"first": seg["first"], "count": seg["count"], "hashes": seg.pop("hashes"), "notes": seg.pop("notes")}
        atomic_write(vault.root / FOLDER / f"{segments.name(seg['first'])[:-4]}.json", canonical_json(doc))
    note = {"kind": "purge", "at": now, "retention_years": years, "segments": result.purged}
    result.leaf = vault.append_note(frames.PURGE_TOPIC, note, now)
    if vault.key is not None:
        vault.checkpoint(now)
    for seg in result.purged:
        os.unlink(vault.root / segments.name(seg["first"]))
    fsync_dir(vault.root)
    return result


class _Covers:
    """Finds the first checkpoint sealing a leaf by bisection: sizes never shrink, and three
    years of minutely checkpoints are too many to read on every purge."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._docs: dict[int, dict[str, Any]] = {}

    def _doc(self, k: int) -> dict[str, Any]:
        if k not in self._docs:
            self._docs[k] = checkpoints.read(self.paths[k])
        return self._docs[k]

    def first_sealing(self, leaf: int) -> dict[str, Any] | None:
        lo, hi = 0, len(self.paths)
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self._doc(mid)["size"]) > leaf:
                hi = mid
            else:
                lo = mid + 1
        return self._doc(lo) if lo < len(self.paths) else None


def _eligible(first: int, path: Path, cps: _Covers, now: float,
              years: float) -> tuple[dict[str, Any] | None, str]:
    """The PURGE leaf's description of a segment, or None and the reason it must stay."""
    found = list(frames.parse(path.read_bytes()))
    if not found or any(isinstance(f, frames.Damage) for f in found):
        return None, f"{path.name}: damaged; run `vault verify` first"
    leaves = [f for f in found if isinstance(f, frames.Frame)]
    last, newest = leaves[-1].i, max(f.t for f in leaves)
    cover = cps.first_sealing(last)
    if cover is None:
        return None, f"{path.name}: no checkpoint seals it yet"
    young = max(newest, float(cover["time"]))
    if now - young < years * YEAR:
        return None, f"{path.name}: newest record or its checkpoint is {(now - young) / YEAR:.2f} years old (< {years})"
    seg = {"first": first, "count": len(leaves), "last": last, "newest_t": newest, "checkpoint": int(cover["n"]),
           "checkpoint_time": float(cover["time"]), "hashes": [f.computed.hex() for f in leaves]}
    seg["hashes_sha256"] = _digest(seg["hashes"])
    # The vault's own notes outlive their segment: a purged PURGE leaf still authorises its purge.
    buf = path.read_bytes()
    seg["notes"] = {str(f.i): buf[f.offset:f.end].decode() for f in leaves if f.topic.startswith(frames.VAULT_TOPIC)}
    return seg, ""


def _digest(hashes: list[str]) -> str:
    """One hash over a segment's leaf hashes, for the PURGE leaf."""
    return hashlib.sha256("".join(hashes).encode()).hexdigest()
