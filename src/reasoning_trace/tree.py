"""The Merkle tree of RFC 9162 (RFC 6962) over the log's records, and proofs from it.

Leaves are the records in ``seq`` order; a leaf's input is its line's bytes as stored, without
the newline. ``leaf = SHA-256(0x00 || line)``, ``node = SHA-256(0x01 || left || right)``.

Hashes of complete subtrees are kept in one append-only file of 32-byte entries, in the order of
Go's ``golang.org/x/mod/sumdb/tlog`` (``stored_hash_index``): for leaf ``n``, its leaf hash, then
the hash of every subtree that leaf completes. Any complete subtree's hash is then one ``pread``
away. A proof's elements cover disjoint ranges of leaves, each split into aligned complete
subtrees, so a proof needs O(log n) reads of 32 bytes (at most 30 at 10^7 records, measured in
``tests/test_tree.py``) — and the proof code reads them through a one-method ``HashReader``, the
same whether the
hashes come from that file, from memory, or from a rebuild. The file is derived: writers extend
it under the writer lock and rebuild its tail from the day files when it is short.

Tests: ``tests/test_tree.py`` (RFC 6962 reference leaves, a naive recursive tree, the
transparency-dev/merkle proof vectors through ``proof.py``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from .errors import UsageError
from .layout import open_derived

__all__ = [
    "EMPTY_ROOT",
    "CompactRange",
    "Hash",
    "HashFile",
    "HashReader",
    "MemoryHashes",
    "consistency_proof",
    "extend_range",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "stored_hash_count",
    "stored_hash_index",
    "subtree_hash",
    "tree_hash",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


#: Standard base64 with padding, as Go's ``base64.StdEncoding`` reads it.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class Hash(bytes):
    """A tree hash: ``HASH_SIZE`` bytes of SHA-256 (RFC 9162 section 2.1). Its text form, in
    checkpoints (C2SP tlog-checkpoint) and proofs (SPEC section 4), is standard base64 with
    padding: ``str(Hash(h))`` writes it, ``Hash.parse`` reads it (as tlog's ``Hash``)."""

    __slots__ = ()

    def __str__(self) -> str:
        return base64.b64encode(self).decode()

    def __repr__(self) -> str:
        return f"Hash({str(self)!r})"

    @classmethod
    def parse(
        cls, text: object, what: str = "hash", *, error: type[Exception] = ValueError
    ) -> Hash:
        """The hash written as ``text``; raises ``error`` (naming ``what``) unless it is
        standard base64 of exactly ``HASH_SIZE`` bytes."""
        if not isinstance(text, str):
            raise error(f"{what} must be a base64 string")
        if not _BASE64.fullmatch(text):
            raise error(f"{what} is not valid base64")
        raw = base64.b64decode(text)
        if len(raw) != HASH_SIZE:
            raise error(f"{what} is {len(raw)} bytes, not {HASH_SIZE}")
        return cls(raw)


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def stored_hash_index(level: int, n: int) -> int:
    """Position in the hash file of the ``n``-th subtree hash at ``level`` (tlog's order)."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def stored_hash_count(size: int) -> int:
    """How many hashes the file holds for a tree of ``size`` leaves."""
    return 2 * size - size.bit_count()


def leaves_for_count(count: int) -> int:
    """The largest tree size whose hashes fit in ``count`` stored hashes."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if stored_hash_count(mid) <= count:
            lo = mid
        else:
            hi = mid - 1
    return lo


class HashReader(Protocol):
    """Reads stored hashes by their ``stored_hash_index``."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The 32-byte hashes at ``indexes``, in order; raise ``IndexError`` if absent."""
        ...


def _perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) as maximal aligned complete subtrees, left to right: (level, index)."""
    out = []
    while lo < hi:
        level = (lo & -lo).bit_length() - 1 if lo else (hi - lo).bit_length() - 1
        while lo + (1 << level) > hi:
            level -= 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def subtree_hash(lo: int, hi: int, reader: HashReader) -> bytes:
    """MTH of leaves [lo, hi): the complete subtrees it splits into, folded from the right.

    Folding right to left gives RFC 9162's split at the largest power of two (the left parts are
    complete subtrees), so this equals the recursive definition for any range a proof asks for.
    """
    if hi <= lo:
        return EMPTY_ROOT
    parts = _perfect_subtrees(lo, hi)
    hashes = reader.read_hashes([stored_hash_index(level, n) for level, n in parts])
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def tree_hash(size: int, reader: HashReader) -> bytes:
    """The root hash of the first ``size`` leaves."""
    return subtree_hash(0, size, reader)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 section 2.1.3.1: PATH(index, D[0:size])."""
    if not 0 <= index < size:
        raise UsageError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    stack = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            stack.append((lo + k, hi))
            hi = lo + k
        else:
            stack.append((lo, lo + k))
            lo = lo + k
    for a, b in reversed(stack):
        proof.append(subtree_hash(a, b, reader))
    return proof


def consistency_proof(old: int, new: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 section 2.1.4.1: PROOF(old, D[0:new]), for 0 < old <= new."""
    if not 0 < old <= new:
        raise UsageError(f"no consistency proof from size {old} to size {new}")
    out: list[bytes] = []
    m, lo, hi, complete = old, 0, new, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append(subtree_hash(lo, hi, reader))
            break
        k = _split(n)
        if m <= k:
            out.append(subtree_hash(lo + k, hi, reader))
            hi = lo + k
        else:
            out.append(subtree_hash(lo, lo + k, reader))
            m, lo, complete = m - k, lo + k, False
    out.reverse()
    return out


class CompactRange:
    """The right edge of a growing tree: O(log n) hashes, enough to append and to get the root.

    ``hashes`` are the complete subtrees covering [0, size), largest (leftmost) first.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise UsageError(f"a compact range of {size} leaves has {size.bit_count()} hashes")

    @classmethod
    def load(cls, size: int, reader: HashReader) -> CompactRange:
        """The compact range of the first ``size`` leaves, read from stored hashes."""
        parts = _perfect_subtrees(0, size)
        return cls(size, reader.read_hashes([stored_hash_index(lv, n) for lv, n in parts]))

    def append(self, leaf: bytes) -> list[bytes]:
        """Add one leaf hash; return the hashes to store for it (leaf, then completed nodes)."""
        stored = [leaf]
        h, n = leaf, self.size
        hashes = self.hashes
        while n & 1:
            h = node_hash(hashes.pop(), h)
            stored.append(h)
            n >>= 1
        hashes.append(h)
        self.size += 1
        return stored

    def root(self) -> bytes:
        """The root hash of the leaves so far."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h


def extend_range(
    hashes: list[bytes], size: int, leaves: bytes, sizes: Sequence[int] = ()
) -> list[list[bytes]]:
    """Append many leaves at once to a compact range, a level at a time (RFC 9162 section 2.1.1).

    ``hashes``: the compact range of the first ``size`` leaves (``CompactRange.hashes``),
    extended in place. ``leaves``: the next leaf hashes, 32 bytes each. ``sizes``: ascending
    sizes in ``(size, end]`` (``end``: ``size`` plus the new leaves), for each of which the
    compact range is returned. The aligned complete subtrees inside the new leaves are hashed
    level by level (one node per pair); only the O(log n) subtrees at the edges are then merged
    into ``hashes``, as transparency-dev/merkle's ``compact.Range`` merges ranges. Equal to
    appending the leaves one by one with ``CompactRange.append``; raises ``UsageError`` if
    ``leaves`` is not whole hashes or a size is out of range.
    """
    if len(leaves) % HASH_SIZE or len(hashes) != size.bit_count():
        raise UsageError("extend_range: leaves must be whole hashes after a whole compact range")
    end = size + len(leaves) // HASH_SIZE
    levels = [(size, leaves)]  # (index of its first node inside the new leaves, the hashes)
    first, buf, level = size, leaves, 0
    node = _sha256(b"\x01").copy
    while (last := end >> (level + 1)) > (up := -(-first // 2)):
        out: list[bytes] = []
        add = out.append
        for i in range((2 * up - first) * HASH_SIZE, (2 * last - first) * HASH_SIZE, 64):
            h = node()
            h.update(buf[i : i + 64])
            add(h.digest())
        first, buf, level = up, b"".join(out), level + 1
        levels.append((first, buf))

    def merge(into: list[bytes], lo: int, hi: int) -> None:
        for lv, n in _perfect_subtrees(lo, hi):
            start, hashes_at = levels[lv]
            h = hashes_at[(n - start) * HASH_SIZE : (n - start + 1) * HASH_SIZE]
            while n & 1:
                h = node_hash(into.pop(), h)
                n >>= 1
            into.append(h)

    out_ranges: list[list[bytes]] = []
    for at in sizes:
        if not size < at <= end:
            raise UsageError(f"extend_range: size {at} is not in ({size}, {end}]")
        edge = list(hashes)
        merge(edge, size, at)
        out_ranges.append(edge)
    merge(hashes, size, end)
    return out_ranges


class MemoryHashes:
    """Stored hashes in a list: a ``HashReader`` for tests and small trees."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.range = CompactRange()

    def add_leaf(self, data: bytes) -> None:
        """Append one record's bytes as a leaf."""
        self.hashes.extend(self.range.append(leaf_hash(data)))

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """See ``HashReader``."""
        return [self.hashes[i] for i in indexes]


class HashFile:
    """The derived hash file: 32-byte stored hashes, appended in ``stored_hash_index`` order."""

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly  # for auditors: opened read-only, never created
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            if self.readonly:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            else:
                self._fd = open_derived(self.path, os.O_RDWR | os.O_CREAT)
        return self._fd

    def count(self) -> int:
        """How many whole hashes the file holds."""
        return os.fstat(self._open()).st_size // HASH_SIZE

    def leaves(self) -> int:
        """How many leaves the file fully covers."""
        return leaves_for_count(self.count())

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """See ``HashReader``."""
        fd = self._open()
        out = []
        for i in indexes:
            h = os.pread(fd, HASH_SIZE, i * HASH_SIZE)
            if len(h) != HASH_SIZE:
                raise IndexError(f"stored hash {i} is not in {self.path}")
            out.append(h)
        return out

    def truncate_to_leaves(self, size: int) -> None:
        """Drop everything past the hashes of the first ``size`` leaves."""
        os.ftruncate(self._open(), stored_hash_count(size) * HASH_SIZE)

    def append(self, hashes: Sequence[bytes]) -> None:
        """Append stored hashes after the last whole hash of the file.

        A failed write (a full disk) is cut back, so the file never holds part of a hash.
        """
        fd = self._open()
        data = b"".join(hashes)
        start = end = os.fstat(fd).st_size // HASH_SIZE * HASH_SIZE
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, end)
                end += n
                view = view[n:]
        except OSError:
            os.ftruncate(fd, start)
            raise

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
