"""In-memory LRU cache of image embeddings, keyed by image content + model + preprocessing."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from .protocols import Embedding


def content_key(image: np.ndarray, *parts: object) -> str:
    """Hash of the pixels (not the array identity) and of everything else that changes the features."""
    digest = hashlib.blake2b(digest_size=16)
    arr = np.ascontiguousarray(image)
    digest.update(repr((arr.shape, arr.dtype.str, parts)).encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


class EmbeddingCache:
    """Thread-safe LRU: the napari widget embeds in a worker thread while the console may call the same model."""

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], Embedding]) -> Embedding:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        embedding = compute()  # outside the lock: encoding takes ~1 s and other keys may be served meanwhile
        with self._lock:
            self.misses += 1
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return embedding

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
