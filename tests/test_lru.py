"""edge/lru.py: the LRU cache bounded in entries and bytes that every client-fed cache uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.lru import ENTRY_OVERHEAD, BoundedLRU, WordCache, sizeof_pair


def _unit(_key: str, _value: object) -> int:
    return 10


@pytest.mark.parametrize(
    ("max_entries", "max_bytes", "puts", "kept"),
    [
        (3, 1000, "abcde", "cde"),  # the entry bound: the oldest go first
        (10, 25, "abcde", "de"),  # the byte bound (10 bytes each)
        (3, 1000, "abcab", "cab"),  # a re-put moves a key to the newest end, not a second copy
        (1, 10, "ab", "b"),
    ],
)
def test_bounds_evict_least_recently_used(
    max_entries: int, max_bytes: int, puts: str, kept: str
) -> None:
    cache: BoundedLRU[str, int] = BoundedLRU(max_entries, max_bytes, _unit)
    for i, k in enumerate(puts):
        cache.put(k, i)
    assert [k for k in puts if k in cache] == [k for k in puts if k in kept]
    assert len(cache) == len(kept) and cache.nbytes == 10 * len(kept)
    stats = cache.stats()
    assert stats["entries"] == len(kept) and stats["bytes"] == cache.nbytes
    assert stats["evictions"] == len(set(puts)) - len(kept)


def test_get_refreshes_an_entry() -> None:
    cache: BoundedLRU[str, int] = BoundedLRU(2, 1000, _unit)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3)
    assert "a" in cache and "b" not in cache and cache.get("b") is None


def test_an_entry_over_the_byte_bound_is_not_kept() -> None:
    cache: BoundedLRU[str, str] = BoundedLRU(10, 1000)
    cache.put("small", "x")
    assert not cache.put("big", "y" * 2000)
    assert "big" not in cache and "small" in cache and cache.evictions == 1


def test_a_flood_of_new_keys_stays_at_the_bounds() -> None:
    cache: BoundedLRU[str, str] = BoundedLRU(500, 64 << 10)
    for i in range(20_000):
        cache.put(f"word{i:06d}" * 3, f"w o r d {i}</w>")
        assert len(cache) <= 500 and cache.nbytes <= 64 << 10
    assert cache.nbytes == sum(sizeof_pair(k, v) for k, (v, _) in cache._items.items())


def test_sizeof_counts_array_data() -> None:
    row = np.zeros(512, np.float32)
    assert sizeof_pair("k", row) >= row.nbytes + ENTRY_OVERHEAD


@pytest.mark.parametrize(("entries", "nbytes"), [(0, 10), (10, 0)])
def test_bounds_must_be_positive(entries: int, nbytes: int) -> None:
    with pytest.raises(ValueError, match="bounds must be >= 1"):
        BoundedLRU(entries, nbytes)


def test_word_cache_memory_bound_and_disk(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def encoder(words: list[str]) -> np.ndarray:
        calls.append(list(words))
        return np.stack([np.full(3, len(w), np.float32) for w in words])

    cache = WordCache(tmp_path / "w", maxsize=2)
    emb, new = cache.encode(["a", "bb", "a"], encoder)
    assert new == 2 and calls == [["a", "bb"]] and emb[:, 0].tolist() == [1, 2, 1]
    cache.encode(["ccc"], encoder)
    assert len(cache) == 2  # bounded in memory
    again = WordCache(tmp_path / "w")  # a restarted process: from disk, no encoding
    emb, new = again.encode(["a", "bb", "ccc"], encoder)
    assert new == 0 and emb[:, 0].tolist() == [1, 2, 3]
    next((tmp_path / "w").glob("*.npy")).write_bytes(b"garbage")
    assert WordCache(tmp_path / "w").encode(["a", "bb", "ccc"], encoder)[1] == 1
    memory_only = WordCache(None)
    memory_only.put("x", np.ones(3, np.float32))
    assert memory_only.get("x") is not None and memory_only.get("y") is None


def test_word_cache_byte_bound_and_copies(tmp_path: Path) -> None:
    """The memory tier is bounded in bytes too (a 60 KB prompt), rows are stored alone, and
    no words encode to (0, 0) without calling the encoder."""
    big = "x" * 60_000
    cache = WordCache(None, maxsize=100, max_bytes=50_000)
    batch = np.ones((2, 4), np.float32)
    emb, new = cache.encode([big, "a"], lambda words: batch[: len(words)])
    assert new == 2 and emb.shape == (2, 4)
    assert cache.get(big) is None and cache.get("a") is not None  # the big one is not kept
    stored = cache.get("a")
    assert stored is not None and stored.base is None  # not a view of the encoder's batch
    assert cache.stats()["entries"] == 1
    empty, new = cache.encode([], lambda words: pytest.fail("encoder called"))
    assert empty.shape == (0, 0) and new == 0
