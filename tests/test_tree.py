"""The RFC 9162 tree: reference leaves, a naive recursive tree, stored-hash indexing."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from reasoning_trace.proof import verify_consistency, verify_inclusion
from reasoning_trace.tree import (
    EMPTY_ROOT,
    CompactRange,
    HashFile,
    MemoryHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    leaves_for_count,
    node_hash,
    stored_hash_count,
    stored_hash_index,
    tree_hash,
)

from .conftest import VECTORS

LEAVES = json.loads((VECTORS / "rfc6962/leaves.json").read_text())


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH by RFC 9162's recursive definition, straight from the text."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) by the recursive definition."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_root(leaves[:k])]


def reference_proof(m: int, leaves: list[bytes], complete: bool = True) -> list[bytes]:
    """SUBPROOF(m, D[n], b) by the recursive definition."""
    n = len(leaves)
    if m == n:
        return [] if complete else [reference_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*reference_proof(m, leaves[:k], complete), reference_root(leaves[k:])]
    return [*reference_proof(m - k, leaves[k:], False), reference_root(leaves[:k])]


def test_rfc6962_reference_roots() -> None:
    """The eight reference leaves give the published root for every prefix, and the empty root."""
    leaves = [bytes.fromhex(h) for h in LEAVES["leaves_hex"]]
    tree = MemoryHashes()
    assert base64.b64encode(EMPTY_ROOT).decode() == LEAVES["empty_root_b64"]
    for size, leaf in enumerate(leaves, start=1):
        tree.add_leaf(leaf)
        want = LEAVES["roots_b64"][str(size)]
        assert base64.b64encode(tree.range.root()).decode() == want
        assert base64.b64encode(tree_hash(size, tree)).decode() == want
        assert base64.b64encode(reference_root(leaves[:size])).decode() == want


def test_against_naive_tree_for_every_small_size() -> None:
    """Roots, inclusion and consistency proofs equal the recursive definitions up to 70 leaves."""
    leaves = [f"record {i}".encode() for i in range(70)]
    tree = MemoryHashes()
    for leaf in leaves:
        tree.add_leaf(leaf)
    for size in range(1, 71):
        root = reference_root(leaves[:size])
        assert tree_hash(size, tree) == root
        for i in range(size):
            proof = inclusion_proof(i, size, tree)
            assert proof == reference_path(i, leaves[:size])
            verify_inclusion(i, size, leaf_hash(leaves[i]), proof, root)
        for old in range(1, size + 1):
            proof = consistency_proof(old, size, tree)
            assert proof == reference_proof(old, leaves[:size])
            verify_consistency(old, size, reference_root(leaves[:old]), root, proof)


def test_random_large_sizes() -> None:
    """Random proofs in a 5,000-leaf tree verify against the streaming root."""
    rng = random.Random(1)
    tree = MemoryHashes()
    for i in range(5000):
        tree.add_leaf(i.to_bytes(4, "big"))
    for _ in range(200):
        size = rng.randrange(1, 5001)
        index = rng.randrange(size)
        root = tree_hash(size, tree)
        verify_inclusion(
            index,
            size,
            leaf_hash(index.to_bytes(4, "big")),
            inclusion_proof(index, size, tree),
            root,
        )
        old = rng.randrange(1, size + 1)
        verify_consistency(
            old, size, tree_hash(old, tree), root, consistency_proof(old, size, tree)
        )


def test_stored_hash_index_matches_tlog() -> None:
    """The stored order is Go tlog's: leaf n's hashes start at stored_hash_index(0, n)."""
    tree = MemoryHashes()
    for n in range(100):
        start = len(tree.hashes)
        assert start == stored_hash_index(0, n) == stored_hash_count(n)
        tree.add_leaf(b"x%d" % n)
        assert leaves_for_count(len(tree.hashes)) == n + 1
    assert stored_hash_index(1, 0) == 2 and stored_hash_index(2, 0) == 6
    assert tree.hashes[stored_hash_index(1, 0)] == node_hash(tree.hashes[0], tree.hashes[1])


def test_compact_range_reload(tmp_path: Path) -> None:
    """A compact range loaded from a hash file continues the same tree."""
    hashes = HashFile(str(tmp_path / "hashes"))
    full = MemoryHashes()
    rng = CompactRange()
    for i in range(37):
        data = b"%d" % i
        full.add_leaf(data)
        hashes.append(rng.append(leaf_hash(data)))
    again = CompactRange.load(37, hashes)
    assert again.root() == rng.root() == tree_hash(37, full)
    assert hashes.leaves() == 37
    hashes.truncate_to_leaves(20)
    assert hashes.leaves() == 20 and CompactRange.load(20, hashes).root() == tree_hash(20, full)
    with pytest.raises(IndexError):
        hashes.read_hashes([stored_hash_count(37)])
    hashes.close()


def test_bad_requests() -> None:
    """Proofs for leaves outside the tree, or from size 0, are refused."""
    tree = MemoryHashes()
    tree.add_leaf(b"a")
    with pytest.raises(ValueError):
        inclusion_proof(1, 1, tree)
    with pytest.raises(ValueError):
        consistency_proof(0, 1, tree)


def test_proofs_read_logarithmically_many_hashes() -> None:
    """A proof in a tree of 10 million leaves reads at most 32 stored hashes."""

    class Counting:
        """A HashReader that only counts."""

        def __init__(self) -> None:
            self.reads = 0

        def read_hashes(self, indexes: list[int]) -> list[bytes]:
            """Count and return dummy hashes."""
            self.reads += len(indexes)
            return [bytes(32)] * len(indexes)

    rng = random.Random(2)
    n = 10_000_000
    for _ in range(300):
        reader = Counting()
        inclusion_proof(rng.randrange(n), n, reader)
        consistency_proof(rng.randrange(1, n), n, reader)
        assert reader.reads <= 2 * 32
