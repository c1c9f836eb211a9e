"""Inclusion proofs a third party can check with SHA-256 and Ed25519 alone.

The proof carries the leaf's exact bytes (header line + envelope text), its audit path to the
root of a signed checkpoint, that checkpoint, and the vault's public key. :func:`check` is the
whole check, written against RFC 9162 so it can be re-implemented from the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.vault import checkpoints, frames, merkle, purge, segments
from protocol import keys
from protocol.envelope import canonical_json

FORMAT = "venueguard-inclusion-proof/1"


class ProofError(Exception):
    """No proof can be made (index not sealed yet, or the vault is damaged)."""


def leaf_hashes(root: Path, upto: int, want: int) -> tuple[list[bytes], bytes | None]:
    """Leaf hashes ``[0, upto)`` (purged segments from their side files) and leaf ``want``'s bytes."""
    hashes: list[bytes] = []
    text: bytes | None = None
    side = purge.side_files(root)
    segs = dict(segments.listing(root))
    for first in sorted(set(segs) | set(side)):
        if len(hashes) >= upto:
            break
        if first != len(hashes):
            raise ProofError(f"leaves {len(hashes)}..{first - 1} are missing; run `vault verify`")
        if first not in segs:
            hashes += [bytes.fromhex(h) for h in side[first]["hashes"]]
            continue
        buf = segs[first].read_bytes()
        for item in frames.parse(buf):
            if isinstance(item, frames.Damage) or item.i != len(hashes):
                raise ProofError(f"{segs[first].name} is damaged; run `vault verify`")
            hashes.append(item.computed)
            if item.i == want:
                text = buf[item.offset:item.end - frames.HASH_LINE - 1]
    return hashes[:upto], text


def prove_in(roots: dict[str, Path], vault_id: str, index: int) -> dict[str, Any]:
    """The proof of leaf ``index`` of the vault ``vault_id`` (a cluster has one vault per collector)."""
    if vault_id not in roots:
        raise ProofError(f"vault {vault_id!r} is not reachable from this collector: name its folder in [vault] roots")
    return {"vault_id": vault_id, **prove(roots[vault_id], index)}


def prove(root: Path, index: int) -> dict[str, Any]:
    """The proof that leaf ``index`` is in the tree of the newest checkpoint."""
    cp = checkpoints.latest(root / checkpoints.FOLDER)
    if cp is None or index >= int(cp["size"]):
        raise ProofError(f"leaf {index} is not sealed by a checkpoint yet (sealed: {0 if cp is None else cp['size']})")
    hashes, text = leaf_hashes(root, int(cp["size"]), index)
    if text is None:
        raise ProofError(f"leaf {index} was purged; only its hash remains")
    if merkle.root(hashes).hex() != cp["root"]:
        raise ProofError("the vault does not match its newest checkpoint; run `vault verify`")
    return {
        "format": FORMAT,
        "leaf_index": index,
        "leaf": text.decode("utf-8"),
        "leaf_hash": hashes[index].hex(),
        "tree_size": int(cp["size"]),
        "audit_path": [h.hex() for h in merkle.inclusion_proof(hashes, index)],
        "checkpoint": cp,
        "how_to_check": "leaf_hash = SHA-256(0x00 || UTF-8 leaf); fold audit_path per RFC 9162 2.1.3.2 "
                        "(node = SHA-256(0x01 || left || right)) to checkpoint.root; checkpoint.sig is the Ed25519 "
                        "signature by checkpoint.key over the canonical JSON (sorted keys, no spaces) of the "
                        "checkpoint without sig; the second line of leaf is the agent's signed envelope.",
    }


def check(proof: dict[str, Any], vault_key_b64: str) -> bool:
    """Verify a proof against the vault public key the verifier trusts (raw base64)."""
    cp = proof["checkpoint"]
    if cp.get("key") != vault_key_b64 or proof["tree_size"] != cp["size"]:
        return False
    body = {k: v for k, v in cp.items() if k != "sig"}
    if not keys.verify(keys.load_public_b64(vault_key_b64), canonical_json(body), cp["sig"]):
        return False
    leaf = merkle.leaf_hash(proof["leaf"].encode("utf-8"))
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    return leaf.hex() == proof["leaf_hash"] and merkle.verify_inclusion(
        leaf, proof["leaf_index"], cp["size"], path, bytes.fromhex(cp["root"]))
