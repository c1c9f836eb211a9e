"""RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, roots, inclusion and consistency
proofs.

Kept dependency-free (hashlib only) so a third party can check a proof with this file alone, and
so the algorithms can be compared line by line with RFC 9162 §2.1.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single leaf: SHA-256(0x00 || data); the prefix stops a leaf posing as a node."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where RFC 6962 splits a tree."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of a list of leaf hashes (iterative, via :class:`CompactRange`)."""
    rng = CompactRange()
    for h in hashes:
        rng.append(h)
    return rng.root()


class CompactRange:
    """The perfect-subtree roots covering leaves [0, size): O(log n) state for an appending tree.

    Appending a leaf merges equal-sized subtrees like a binary counter, so the root of any prefix
    is available without keeping every leaf hash in memory.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # subtree roots, largest (leftmost) first

    def append(self, h: bytes) -> None:
        """Add one leaf hash."""
        self._stack.append(h)
        self.size += 1
        n = self.size
        while n & 1 == 0:
            right = self._stack.pop()
            self._stack[-1] = node_hash(self._stack[-1], right)
            n >>= 1

    def stack(self) -> list[bytes]:
        """The subtree roots (what a checkpoint stores to resume the tree)."""
        return list(self._stack)

    def restore(self, size: int, stack: list[bytes]) -> None:
        """Resume from a saved state; the stack must have one hash per set bit of ``size``."""
        if bin(size).count("1") != len(stack):
            raise ValueError(f"a tree of size {size} has {bin(size).count('1')} subtrees, not {len(stack)}")
        self.size, self._stack = size, list(stack)

    def root(self) -> bytes:
        """Root of the tree over all leaves so far (RFC 6962 MTH; empty tree = SHA-256 of nothing)."""
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            acc = node_hash(h, acc)
        return acc


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of ``hashes`` (RFC 9162 §2.1.3.1, PATH)."""
    if not 0 <= index < len(hashes):
        raise ValueError(f"leaf {index} is not in a tree of size {len(hashes)}")
    return _path(list(hashes), index)


def _path(hashes: list[bytes], m: int) -> list[bytes]:
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return _path(hashes[:k], m) + [root(hashes[k:])]
    return _path(hashes[k:], m - k) + [root(hashes[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """Check an audit path (RFC 9162 §2.1.3.2); ``leaf`` is the leaf *hash*."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree of the first ``old_size`` leaves is a prefix (RFC 9162 §2.1.4.1)."""
    if not 0 < old_size <= len(hashes):
        raise ValueError(f"no consistency proof from size {old_size} to {len(hashes)}")
    return _subproof(old_size, list(hashes), True)


def _subproof(m: int, hashes: list[bytes], whole: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if whole else [root(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], whole) + [root(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [root(hashes[:k])]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """Check a consistency proof (RFC 9162 §2.1.4.2)."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
