"""The vault: RFC 6962 tree, segments and rotation, checkpoints and witness copies, torn-tail
recovery, and the public API the ingest path uses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from collector.vault import Vault, VaultError, checkpoints, merkle
from tests.collector.vaultkit import Kit, sealed_kit


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash, written recursively from the RFC as the reference."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_merkle_matches_rfc6962_and_proofs_check() -> None:
    """Roots equal the RFC's recursive definition; every inclusion and consistency proof checks,
    and a proof for the wrong leaf or root does not."""
    data = [f"leaf {i}".encode() for i in range(33)]
    hashes = [merkle.leaf_hash(d) for d in data]
    for n in range(0, 34):
        assert merkle.root(hashes[:n]) == _mth(data[:n])
    for n in (1, 2, 3, 7, 8, 13, 33):
        r = merkle.root(hashes[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(hashes[:n], i)
            assert merkle.verify_inclusion(hashes[i], i, n, proof, r)
            assert not merkle.verify_inclusion(hashes[(i + 1) % 33], i, n, proof, r)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(hashes[:n], m)
            assert merkle.verify_consistency(m, n, merkle.root(hashes[:m]), r, proof)
            if m < n:
                assert not merkle.verify_consistency(m, n, merkle.root(hashes[1:m + 1]), r, proof)


def test_api_append_entries_reopen_and_rotation(tmp_path: Path) -> None:
    """append returns leaf indexes; entries(start) yields .i .t .topic .payload exactly as
    given; the tree survives rotation and reopening."""
    kit = Kit(tmp_path / "v", tmp_path / "w")
    vault = kit.open()
    assert vault.append([]) == []
    assert vault.append([(1.0, "vg/v1/a1/ev", '{"n":1,"中":"文"}'), (2.0, "collector/a1", '{"n":2}')]) == [0, 1]
    kit.fill(vault, 30)
    head = vault.head
    vault.close()
    assert len(list(tmp_path.glob("v/seg-*.log"))) > 2
    again = kit.open()
    assert again.size == 32 and again.head == head
    (e,) = list(again.entries(0))[:1]
    assert (e.i, e.t, e.topic, e.payload) == (0, 1.0, "vg/v1/a1/ev", '{"n":1,"中":"文"}')
    assert [e.i for e in again.entries(28)] == [28, 29, 30, 31]
    assert again.verify() == 32
    again.close()


def test_checkpoints_every_interval_signed_chained_and_witnessed(tmp_path: Path) -> None:
    """tick() writes a checkpoint each interval even when nothing arrived; each names the one
    before, is signed by the vault key, and the witness holds an identical copy."""
    kit = Kit(tmp_path / "v", tmp_path / "w")
    vault = kit.open()
    assert vault.tick() is True and vault.tick() is False
    for _ in range(3):  # idle minutes still produce checkpoints
        kit.now += 60
        assert vault.tick() is True
    vault.close()
    docs = [checkpoints.read(p) for p in checkpoints.files(kit.root / "checkpoints")]
    assert [d["n"] for d in docs] == [0, 1, 2, 3] and all(d["size"] == 0 for d in docs)
    assert all(docs[k]["prev"] == checkpoints.doc_hash(docs[k - 1]) for k in (1, 2, 3))
    wit = [p.read_bytes() for p in checkpoints.files(kit.witness)]
    assert wit == [p.read_bytes() for p in checkpoints.files(kit.root / "checkpoints")]
    report = kit.verify()
    assert report.problems == [] and report.checkpoints == 4


def test_torn_tail_is_cut_and_recorded_as_a_signed_recovery_leaf(tmp_path: Path) -> None:
    """A crash mid-append leaves half a frame after the last checkpoint; reopening cuts it,
    appends a signed RECOVERY leaf and seals it; verify lists the recovery, no problem."""
    kit = Kit(tmp_path / "v", tmp_path / "w")
    vault = kit.open()
    kit.fill(vault, 5)
    vault.close()
    seg = sorted(kit.root.glob("seg-*.log"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"i":5,"n":300,"t":1.0,"topic":"vg/v1/a1/log"}\n{"v":1,"agent')
    again = kit.open()
    assert again.repaired_bytes > 0 and again.size == 6 and again.sealed == 6
    (note,) = list(again.entries(5, internal=True))
    assert note.topic == "vault/recovery" and json.loads(note.payload)["cut_bytes"] == again.repaired_bytes
    assert list(again.entries(5)) == []  # the index never sees vault notes
    again.close()
    report = kit.verify()
    assert report.problems == [] and [r["leaf"] for r in report.recoveries] == [5]


def test_damage_before_a_checkpoint_refuses_to_open(tmp_path: Path) -> None:
    """Damage inside sealed leaves is tampering, not a crash: the vault will not open for writing."""
    kit = sealed_kit(tmp_path, 10)
    seg = sorted(kit.root.glob("seg-*.log"))[-1]
    seg.write_bytes(seg.read_bytes()[:-40])
    with pytest.raises(VaultError):
        kit.open()


def test_one_writer_only(tmp_path: Path) -> None:
    """A second writer (e.g. `vault purge` while the collector runs) is refused, not interleaved."""
    kit = Kit(tmp_path / "v", tmp_path / "w")
    vault = kit.open()
    with pytest.raises(VaultError, match="another process"):
        Vault(kit.root)
    vault.close()
    Vault(kit.root).close()


def test_verify_beside_a_writer_reports_an_unfinished_append_not_tampering(tmp_path: Path) -> None:
    """Half a frame at the very end (an append in flight) is reported as such, not MODIFIED."""
    kit = Kit(tmp_path / "v", tmp_path / "w")
    vault = kit.open()
    kit.fill(vault, 3)
    vault.close()
    with sorted(kit.root.glob("seg-*.log"))[-1].open("ab") as fh:
        fh.write(b'{"i":3,"n":300,"t":1.0,"topic":"vg/v1/a1/log"}\n{"v":1')
    report = kit.verify()
    assert report.problems == [] and report.torn_tail > 0 and report.size == 3
