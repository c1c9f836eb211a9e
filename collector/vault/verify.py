"""The labelled verifier: re-hash every leaf, rebuild the tree, and check it against every signed
checkpoint and its witness copy, naming each problem.

Labels: MODIFIED, MISSING, TRUNCATED, REORDERED, DUPLICATE, FORGED_SIGNATURE, UNKNOWN_KEY,
CHECKPOINT_GAP, FORK, PURGED_EARLY. Authorised purges and crash recoveries are listed, not
failures; leaves after the last checkpoint are reported as the unsealed tail. It only reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.vault import checkpoints, frames, purge, segments
from collector.vault.merkle import EMPTY_ROOT, CompactRange
from protocol import keys
from protocol.envelope import canonical_json, decode
from protocol.errors import ProtocolError

#: agent id -> (current public key, when it was enrolled)
AgentKeys = dict[str, tuple[Ed25519PublicKey, float]]


@dataclass(frozen=True)
class Problem:
    """One finding: a label, where it is, and what exactly is wrong."""

    label: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.label} {self.where}: {self.detail}"


@dataclass
class Report:
    """Everything verification found."""

    size: int = 0
    sealed: int = 0
    checkpoints: int = 0
    bytes: int = 0
    signatures: int = 0
    torn_tail: int = 0  # bytes of an unfinished last frame
    problems: list[Problem] = field(default_factory=list)
    purges: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unsealed(self) -> int:
        """Leaves after the last checkpoint (a running collector seals them within a minute)."""
        return self.size - self.sealed

    @property
    def labels(self) -> set[str]:
        """The distinct problem labels."""
        return {p.label for p in self.problems}


def verify_vault(root: Path, trusted: list[Ed25519PublicKey], *, witness: Path | None = None,
                 agent_keys: AgentKeys | None = None, gap_grace: float = 120.0,
                 min_retention_years: float = purge.MIN_RETENTION_YEARS,
                 progress: Callable[[int], None] | None = None) -> Report:
    """Verify the vault at ``root`` against the vault keys ``trusted`` (and agent keys, if given)."""
    v = _Verifier(root, {keys.public_b64(k): k for k in trusted}, witness, agent_keys, gap_grace, min_retention_years)
    return v.run(progress or (lambda _n: None))


def total_bytes(root: Path) -> int:
    """Bytes of segment data (for a progress bar)."""
    return sum(p.stat().st_size for _, p in segments.listing(root))


class _Verifier:
    def __init__(self, root: Path, trusted: dict[str, Ed25519PublicKey], witness: Path | None,
                 agent_keys: AgentKeys | None, gap_grace: float, min_years: float) -> None:
        self.root, self.trusted, self.witness = root, trusted, witness
        self.agent_keys, self.gap_grace, self.min_years = agent_keys, gap_grace, min_years
        self.report = Report()
        self.tree = CompactRange()
        self.expected = 0
        self.broken = False  # a hole: later roots cannot be recomputed
        self.root_bad = False  # a root already failed: later ones fail as a consequence
        self.modified_leaves: list[int] = []
        self.authorised: set[int] = set()
        self.cps: list[dict[str, Any]] = []
        self.cp_at = 0

    def flag(self, label: str, where: str, detail: str) -> None:
        self.report.problems.append(Problem(label, where, detail))

    def run(self, progress: Callable[[int], None]) -> Report:
        self.cps = self._checkpoints()
        self._check_roots()
        side = purge.side_files(self.root)
        segs = dict(segments.listing(self.root))
        for first in sorted(set(segs) | set(side)):
            if first in segs:
                self._segment(segs[first], last=first == max(segs))
                self.report.bytes += segs[first].stat().st_size
                progress(segs[first].stat().st_size)
            else:
                self._purged(first, side[first])
        self._finish(side, segs)
        return self.report

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoints(self) -> list[dict[str, Any]]:
        """Local checkpoints (witness copies fill holes), signature- and chain-checked, by number."""
        local = self._load(self.root / checkpoints.FOLDER, "checkpoint")
        theirs = self._load(self.witness, "witness checkpoint") if self.witness is not None else {}
        for n, doc in theirs.items():
            if n in local and canonical_json(local[n]) != canonical_json(doc):
                self.flag("FORK", f"checkpoint {n}", f"the vault has size {local[n].get('size')} root {local[n].get('root')}, "
                          f"the witness size {doc.get('size')} root {doc.get('root')}")
        merged = {**theirs, **local}
        bad: set[int] = set()
        for n, doc in sorted(merged.items()):
            label = frames.check_note(doc, self.trusted)
            if label:
                bad.add(n)
                self.flag(label, f"checkpoint {n}", "signature does not verify" if label == "FORGED_SIGNATURE"
                          else f"signed by unknown key {doc.get('key')}")
        for n in range(max(merged, default=-1) + 1):
            if n not in local:
                self.flag("CHECKPOINT_GAP", f"checkpoint {n}", "missing from the vault" + (" (the witness has it)" if n in theirs else ""))
        self._chain(merged, bad)
        self.report.checkpoints = len(merged)
        return [merged[n] for n in sorted(merged)]

    def _load(self, folder: Path, what: str) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for path in checkpoints.files(folder):
            try:
                found[checkpoints.number_of(path)] = checkpoints.read(path)
            except (ValueError, OSError) as exc:
                self.flag("MODIFIED", f"{what} {path.name}", f"unreadable ({exc})")
        return found

    def _chain(self, merged: dict[int, dict[str, Any]], bad: set[int]) -> None:
        """Each checkpoint names its predecessor's hash, never shrinks, and comes on time."""
        for n, doc in sorted(merged.items()):
            prev = merged.get(n - 1)
            if prev is None or n in bad or n - 1 in bad:
                continue
            if doc.get("prev") != checkpoints.doc_hash(prev):
                self.flag("FORK", f"checkpoint {n}", f"does not follow checkpoint {n - 1}")
            elif int(doc["size"]) < int(prev["size"]):
                self.flag("FORK", f"checkpoint {n}", f"size {doc['size']} is smaller than {prev['size']} before it")
            allowed = 2 * float(prev.get("interval", 60)) + self.gap_grace
            if float(doc["time"]) - float(prev["time"]) > allowed:
                self.flag("CHECKPOINT_GAP", f"checkpoints {n - 1}..{n}",
                          f"{float(doc['time']) - float(prev['time']):.0f} s apart (allowed {allowed:.0f} s)")

    def _check_roots(self) -> None:
        """Compare the tree with every checkpoint of the current size."""
        while self.cp_at < len(self.cps) and int(self.cps[self.cp_at]["size"]) <= self.tree.size:
            doc = self.cps[self.cp_at]
            self.cp_at += 1
            if int(doc["size"]) != self.tree.size or self.broken or self.root_bad:
                continue
            got = self.tree.root() if self.tree.size else EMPTY_ROOT
            if got.hex() != doc["root"]:
                self.root_bad = True
                if not self.modified_leaves:
                    self.flag("MODIFIED", f"checkpoint {doc['n']}", f"leaves below {doc['size']} do not give its root")

    # -- leaves --------------------------------------------------------------------------------

    def _segment(self, path: Path, last: bool) -> None:
        buf = path.read_bytes()
        found: list[frames.Frame] = []
        for item in frames.parse(buf):
            if isinstance(item, frames.Damage) and last and item.torn and item.end == len(buf):
                # An append in progress (verify beside a running collector) or a crash not yet
                # recovered; if it held sealed leaves, TRUNCATED says so.
                self.report.torn_tail = item.end - item.offset
            elif isinstance(item, frames.Damage):
                self.flag("MODIFIED", f"{path.name} offset {item.offset}", f"{item.reason}; {item.end - item.offset} bytes")
            else:
                found.append(item)
        last, seen = -1, set()
        for f in found:
            if f.i in seen:
                continue
            seen.add(f.i)
            if f.i < last:
                self.flag("REORDERED", f"{path.name} offset {f.offset}", f"leaf {f.i} after leaf {last}")
            last = max(last, f.i)
        for f in sorted(found, key=lambda f: f.i):
            if f.i < self.expected:
                self.flag("DUPLICATE", f"{path.name} offset {f.offset}", f"leaf {f.i} appears again")
                continue
            self._hole(f.i, path.name)
            if f.stored != f.computed.hex():
                self.modified_leaves.append(f.i)
                self.flag("MODIFIED", f"leaf {f.i} ({path.name} offset {f.offset})", "content does not match its hash")
            else:
                self._content(f)  # an edited leaf's signature failing too says nothing new
            self._add(f.computed)

    def _purged(self, first: int, doc: dict[str, Any]) -> None:
        """A purged segment: its leaf hashes keep the tree whole; its vault notes are re-read."""
        self._hole(first, f"purged segment {first}")
        for k, h in enumerate(doc["hashes"]):
            text = doc.get("notes", {}).get(str(first + k))
            if text is not None:
                (f,) = frames.parse(text.encode())
                if not isinstance(f, frames.Frame) or f.computed.hex() != h or f.i != first + k:
                    self.flag("MODIFIED", f"purged segment {first}", f"kept note {first + k} does not match its hash")
                else:
                    self._content(f)
            self._add(bytes.fromhex(h))

    def _hole(self, i: int, where: str) -> None:
        if i > self.expected:
            self.flag("MISSING", where, f"leaves {self.expected}..{i - 1} are gone")
            self.broken, self.expected = True, i

    def _add(self, h: bytes) -> None:
        self.expected += 1
        if not self.broken:
            self.tree.append(h)
            self._check_roots()

    def _content(self, f: frames.Frame) -> None:
        """Vault notes must carry the vault's signature; envelopes their agent's."""
        if f.topic.startswith(frames.VAULT_TOPIC):
            self._note(f)
        elif f.topic.startswith("vg/") and self.agent_keys is not None:
            self._envelope(f)

    def _note(self, f: frames.Frame) -> None:
        try:
            doc = json.loads(f.payload)
        except ValueError:
            self.flag("MODIFIED", f"leaf {f.i}", "vault note is not JSON")
            return
        label = frames.check_note(doc, self.trusted)
        if label:
            self.flag(label, f"leaf {f.i}", f"{f.topic} note is not signed by a vault key")
        if f.topic == frames.RECOVERY_TOPIC:
            self.report.recoveries.append({"leaf": f.i, **doc})
        elif f.topic == frames.PURGE_TOPIC:
            self._purge_note(f.i, doc)

    def _purge_note(self, i: int, doc: dict[str, Any]) -> None:
        years = float(doc.get("retention_years", 0))
        self.report.purges.append({"leaf": i, **doc})
        if years < self.min_years:
            self.flag("PURGED_EARLY", f"leaf {i}", f"retention {years} years is below the minimum {self.min_years}")
        for seg in doc.get("segments", []):
            self.authorised.add(int(seg["first"]))
            young = max(float(seg["newest_t"]), float(seg["checkpoint_time"]))
            if float(doc["at"]) - young < years * purge.YEAR:
                self.flag("PURGED_EARLY", f"leaf {i}", f"segment {seg['first']} was {(float(doc['at']) - young) / purge.YEAR:.2f} years old")

    def _envelope(self, f: frames.Frame) -> None:
        assert self.agent_keys is not None
        self.report.signatures += 1
        try:
            env = decode(f.payload)
        except ProtocolError as exc:
            self.flag("FORGED_SIGNATURE", f"leaf {f.i}", f"envelope does not parse ({exc.detail})")
            return
        known = self.agent_keys.get(env.agent_id)
        if known is None:
            self.flag("UNKNOWN_KEY", f"leaf {f.i}", f"agent {env.agent_id!r} is not enrolled")
        elif not env.verify(known[0]):
            if f.t < known[1]:
                self.flag("UNKNOWN_KEY", f"leaf {f.i}", f"agent {env.agent_id!r} was re-keyed after this leaf; its old key is not kept")
            else:
                self.flag("FORGED_SIGNATURE", f"leaf {f.i}", f"envelope of agent {env.agent_id!r} does not verify with its key")

    def _finish(self, side: dict[int, dict[str, Any]], segs: dict[int, Path]) -> None:
        for first in sorted(set(side) - set(segs) - self.authorised):
            self.flag("MISSING", f"segment {first}", "deleted without a signed PURGE leaf")
        self.report.size = self.expected
        last = int(self.cps[-1]["size"]) if self.cps else 0
        if last > self.expected:
            self.flag("TRUNCATED", f"checkpoint {self.cps[-1]['n']}", f"sealed {last} leaves, the vault has {self.expected}")
        self.report.sealed = min(last, self.expected)
