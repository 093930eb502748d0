"""A least-recently-used cache bounded in entries and in bytes (thread-safe).

Every cache that clients can fill (the tokenizer's BPE words, text embeddings, the page's
thumbnails) is one of these, so that a flood of new keys (300 text prompts of 60 KB of new
words each) costs at most the cache's byte bound, never the service's memory limit. Its
:meth:`BoundedLRU.stats` feed the service's ``fastsam_cache_*`` metrics.

:class:`WordCache` adds a disk tier for text embeddings (YOLOE's words, CLIP's prompts): a
text tower's session can then be released once its words are encoded, and a restarted
service encodes nothing it has seen.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ENTRY_OVERHEAD = 104
"""Bytes of bookkeeping per entry on 64-bit CPython (an ``OrderedDict`` slot and its link)."""


def sizeof_pair(key: Any, value: Any) -> int:
    """Default entry size: ``sys.getsizeof`` of key and value plus :data:`ENTRY_OVERHEAD`
    (an array's data buffer counted by ``nbytes``)."""
    size = ENTRY_OVERHEAD + sys.getsizeof(key)
    nbytes = getattr(value, "nbytes", None)
    size += int(nbytes) + 112 if isinstance(nbytes, int) else sys.getsizeof(value)
    return size


class BoundedLRU(Generic[K, V]):
    """A mapping that keeps at most ``max_entries`` entries and ``max_bytes`` bytes.

    Adding past either bound evicts the least recently used entries. An entry larger than
    the whole byte bound is not kept at all (the caller recomputes it next time).

    Args:
        max_entries: Most entries kept (>= 1).
        max_bytes: Most bytes kept, as ``sizeof`` measures them.
        sizeof: Bytes of one entry (default :func:`sizeof_pair`).

    Attributes:
        evictions: Entries evicted (or refused for their size) since creation.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        sizeof: Callable[[K, V], int] = sizeof_pair,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(
                f"BoundedLRU: bounds must be >= 1, got {max_entries} entries, {max_bytes} bytes"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes held now (as ``sizeof`` measures them)."""
        return self._bytes

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` (marked as recently used), or ``default``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V) -> bool:
        """Add or replace an entry, evicting the least recently used ones past the bounds.

        Returns:
            Whether the entry is kept (False: it alone is larger than ``max_bytes``).
        """
        size = int(self._sizeof(key, value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                self.evictions += 1
                return False
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
                self.evictions += 1
            return True

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """``entries``, ``bytes``, ``max_entries``, ``max_bytes`` and ``evictions``."""
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self._bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
                "evictions": self.evictions,
            }


WORD_CACHE_SIZE = 512
"""Words kept in memory per text tower (a (D,) float32 each: 2 KiB at D = 512)."""
WORD_CACHE_BYTES = 4 << 20
"""Memory bound of those (words and embeddings): a CLIP prompt's text may be 60 KB."""


class WordCache:
    """Text embeddings of one text tower, in memory (:class:`BoundedLRU`) and on disk.

    On disk, each text is one ``.npy`` under ``directory`` (named by the text's sha256),
    written atomically; a restarted service re-encodes nothing it has seen. The directory
    should be specific to the tower (e.g. named by its file's sha256): embeddings of another
    tower are meaningless.

    Attributes:
        directory: Where texts are persisted (``None``: memory only).
        maxsize: Texts kept in memory.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        maxsize: int = WORD_CACHE_SIZE,
        max_bytes: int = WORD_CACHE_BYTES,
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.maxsize = maxsize
        self._memory: BoundedLRU[str, NDArray[np.float32]] = BoundedLRU(maxsize, max_bytes)

    def _file(self, word: str) -> Path:
        assert self.directory is not None
        return self.directory / (hashlib.sha256(word.encode("utf-8")).hexdigest()[:40] + ".npy")

    def get(self, word: str) -> NDArray[np.float32] | None:
        """The text's embedding, or ``None`` if never stored (an unreadable file is ignored)."""
        found = self._memory.get(word)
        if found is not None:
            return found
        if self.directory is None:
            return None
        try:
            found = np.load(self._file(word), allow_pickle=False).astype(np.float32)
        except (OSError, ValueError):
            return None
        if found.ndim != 1:
            return None
        self._memory.put(word, found)
        return found

    def put(self, word: str, embedding: NDArray[np.float32]) -> None:
        """Store a (D,) embedding in memory and, if there is a directory, on disk (best effort:
        a read-only state directory only costs a re-encoding later)."""
        embedding = np.array(embedding, dtype=np.float32)  # a row alone, not a view of a batch
        self._memory.put(word, embedding)
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self._file(word)
            tmp = target.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}.npy")
            np.save(tmp, embedding)
            os.replace(tmp, target)
        except OSError:
            pass

    def __len__(self) -> int:
        return len(self._memory)

    def stats(self) -> dict[str, int]:
        """The memory tier's :meth:`BoundedLRU.stats`."""
        return self._memory.stats()

    def encode(
        self, words: Sequence[str], encoder: Callable[[list[str]], NDArray[np.float32]]
    ) -> tuple[NDArray[np.float32], int]:
        """(K, D) embeddings of ``words``; the missing ones encoded in one ``encoder`` call.

        Returns:
            The embeddings ((0, 0) for no words) and how many texts were encoded now.
        """
        found = {w: self.get(w) for w in dict.fromkeys(words)}
        missing = [w for w, e in found.items() if e is None]
        if missing:
            new = np.asarray(encoder(missing), dtype=np.float32)
            for w, e in zip(missing, new, strict=True):
                self.put(w, e)
                found[w] = e
        if not words:
            return np.zeros((0, 0), dtype=np.float32), len(missing)
        return np.stack([found[w] for w in words]).astype(np.float32), len(missing)
