"""Each kind of tampering, made on a copy of a real vault, is named by its label — and an honest
vault (with an authorised purge) verifies clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.vault import checkpoints, frames, purge
from collector.vault.merkle import CompactRange
from collector.vault.segments import name as segment_name
from protocol import keys
from protocol.envelope import canonical_json
from tests.collector.vaultkit import STEP, Kit, sealed_kit


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return sealed_kit(tmp_path_factory.mktemp("vault"), 40)


@pytest.fixture
def kit(original: Kit, tmp_path: Path) -> Kit:
    return original.copy(tmp_path)


def _segments(kit: Kit) -> list[Path]:
    return sorted(kit.root.glob("seg-*.log"))


def _frames(path: Path) -> list[frames.Frame]:
    return [f for f in frames.parse(path.read_bytes()) if isinstance(f, frames.Frame)]


def _cps(folder: Path) -> list[Path]:
    return checkpoints.files(folder)


def _resign(kit: Kit, folder: Path, key: keys.Ed25519PrivateKey, hashes: list[bytes] | None = None) -> None:
    """Rewrite every checkpoint in ``folder`` as the key holder would: new roots (from ``hashes``
    when given), re-chained, re-signed."""
    prev = None
    for path in _cps(folder):
        doc = checkpoints.read(path)
        if hashes is not None:
            tree = CompactRange()
            for h in hashes[:doc["size"]]:
                tree.append(h)
            doc["root"], doc["stack"] = tree.root().hex(), [h.hex() for h in tree.stack()]
        doc["prev"] = checkpoints.GENESIS if prev is None else checkpoints.doc_hash(prev)
        body = {k: v for k, v in doc.items() if k not in ("sig", "key")}
        doc = frames.sign_note(key, body)
        path.write_bytes(canonical_json(doc) + b"\n")
        prev = doc


def test_an_honest_vault_verifies_clean(original: Kit) -> None:
    """No problem, everything sealed, every agent signature re-checked."""
    report = original.verify()
    assert report.problems == [] and report.size == 40 and report.unsealed == 0 and report.signatures == 40


def test_modified_byte(kit: Kit) -> None:
    """An edited payload byte: MODIFIED at that leaf."""
    seg = _segments(kit)[1]
    seg.write_bytes(seg.read_bytes().replace(b"line ", b"lime ", 1))
    report = kit.verify()
    assert report.labels == {"MODIFIED"} and "leaf" in report.problems[0].where


def test_modified_with_recomputed_leaf_hash(kit: Kit) -> None:
    """An editor who also rewrites the hash line is still caught by the signed checkpoint root."""
    seg = _segments(kit)[1]
    f = _frames(seg)[0]
    data, _ = frames.encode(f.i, f.t, f.topic, f.payload.decode().replace("line", "lime"))
    buf = seg.read_bytes()
    seg.write_bytes(buf[:f.offset] + data + buf[f.end:])
    report = kit.verify(agent_keys=None)
    assert report.labels == {"MODIFIED"} and report.problems[0].where.startswith("checkpoint")


def test_missing_segment(kit: Kit) -> None:
    """A deleted middle segment: MISSING, naming the leaves."""
    _segments(kit)[2].unlink()
    assert kit.verify().labels == {"MISSING"}


def test_truncated_end(kit: Kit) -> None:
    """Sealed leaves cut off the end: TRUNCATED."""
    last = _segments(kit)[-1]
    last.write_bytes(last.read_bytes()[:_frames(last)[-1].offset])
    assert kit.verify().labels == {"TRUNCATED"}


def test_reordered_frames(kit: Kit) -> None:
    """Two frames swapped inside a segment: REORDERED (the content itself is intact)."""
    seg = _segments(kit)[1]
    a, b = _frames(seg)[:2]
    buf = seg.read_bytes()
    seg.write_bytes(buf[:a.offset] + buf[b.offset:b.end] + buf[a.offset:a.end] + buf[b.end:])
    assert kit.verify().labels == {"REORDERED"}


def test_duplicate_frame(kit: Kit) -> None:
    """A frame copied again: DUPLICATE."""
    seg = _segments(kit)[1]
    f = _frames(seg)[0]
    buf = seg.read_bytes()
    seg.write_bytes(buf + buf[f.offset:f.end])
    assert kit.verify().labels == {"DUPLICATE"}


def test_forged_checkpoint_signature(kit: Kit) -> None:
    """A checkpoint whose signature no longer verifies: FORGED_SIGNATURE."""
    path = _cps(kit.root / "checkpoints")[3]
    doc = json.loads(path.read_bytes())
    doc["time"] += 1
    path.write_bytes(canonical_json(doc))
    assert "FORGED_SIGNATURE" in kit.verify().labels


def test_forged_agent_signature(kit: Kit) -> None:
    """An envelope the agent never signed, vaulted and sealed (a compromised collector):
    FORGED_SIGNATURE on that leaf, although every hash and checkpoint agrees."""
    vault = kit.open()
    kit.now += STEP
    vault.append([(kit.now, "vg/v1/a1/log", kit.envelope(41, key=keys.new_private_key()))])
    vault.close()
    report = kit.verify()
    assert report.labels == {"FORGED_SIGNATURE"} and report.problems[0].where == "leaf 40"


def test_unknown_key(kit: Kit) -> None:
    """Checkpoints re-signed with another key, and an envelope of an agent never enrolled:
    UNKNOWN_KEY for both."""
    vault = kit.open()
    kit.now += STEP
    vault.append([(kit.now, "vg/v1/zz/log", kit.envelope(1, agent_id="zz"))])
    vault.close()
    other = keys.new_private_key()
    _resign(kit, kit.root / "checkpoints", other)
    _resign(kit, kit.witness, other)
    report = kit.verify()
    assert report.labels == {"UNKNOWN_KEY"}
    assert any(p.where == "leaf 40" for p in report.problems) and any("checkpoint" in p.where for p in report.problems)


def test_checkpoint_gap(kit: Kit) -> None:
    """A deleted checkpoint (the witness still has it), and a stretch without checkpoints:
    CHECKPOINT_GAP."""
    _cps(kit.root / "checkpoints")[4].unlink()
    report = kit.verify()
    assert report.labels == {"CHECKPOINT_GAP"} and "witness has it" in report.problems[0].detail
    vault = kit.open()
    kit.now += 3600  # the collector was down for an hour
    vault.tick()
    vault.close()
    assert any("apart" in p.detail for p in kit.verify().problems)


def test_fork_against_the_witness(kit: Kit) -> None:
    """History rewritten by someone holding the vault key (leaf edited, hashes and checkpoints
    recomputed and re-signed): everything agrees locally, the witness copy shows a FORK."""
    seg = _segments(kit)[1]
    f = _frames(seg)[0]
    data, _ = frames.encode(f.i, f.t, f.topic, f.payload.decode().replace("line", "lime"))
    buf = seg.read_bytes()
    seg.write_bytes(buf[:f.offset] + data + buf[f.end:])
    hashes = [g.computed for p in _segments(kit) for g in _frames(p)]
    _resign(kit, kit.root / "checkpoints", kit.key, hashes)
    report = kit.verify(agent_keys=None)
    assert report.labels == {"FORK"}


def test_authorised_purge_is_listed_and_early_purge_is_flagged(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge after 3 years is listed, not a failure; younger data is refused; a purge made by
    a collector whose minimum was lowered is PURGED_EARLY."""
    vault = kit.open()
    young = vault.purge(now=kit.now + 86400 * 365)
    assert young.purged == [] and "years old" in young.kept[0]
    with pytest.raises(purge.PurgeRefused):
        vault.purge(now=kit.now, years=2)
    done = vault.purge(now=kit.now + 3.1 * purge.YEAR)
    vault.close()
    assert done.purged and not (kit.root / segment_name(done.purged[0]["first"])).exists()
    report = kit.verify(gap_grace=10 * purge.YEAR)
    assert report.problems == [] and report.purges and report.size == 41
    early = Kit(kit.root.parent / "e" / "vault", kit.root.parent / "e" / "witness", kit.key, kit.agent)
    vault = early.open()
    early.fill(vault, 20)
    monkeypatch.setattr(purge, "MIN_RETENTION_YEARS", 0.5)
    assert vault.purge(now=early.now + 1.1 * purge.YEAR, years=1).purged
    vault.close()
    assert "PURGED_EARLY" in early.verify(gap_grace=10 * purge.YEAR).labels
