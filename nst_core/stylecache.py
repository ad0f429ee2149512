"""The style targets a warm engine keeps between jobs (docs/protocol.md, "The engine service").

A style's targets (its Gram matrices, or its means and covariance square roots, per layer) depend only
on the style's pixels as the network sees them, the size they are matched at, and the settings that
shape the features; not on the content, the weights of the loss terms or the strength. A service's
worker keeps them here, so that a repeated preview, or a job that changed only those, computes none.
It keeps the balance's trials per picture here too (balance.py), so the next preview starts from them,
and each picture's last preview (previews.py), so the next one after a change of weights starts there.

`StyleCache` is an LRU of targets bounded by their bytes; `ScopedCache` is one run's view of it, its
keys prefixed by what the whole run shares (model, weights file, pooling, device, precision). One-off
runs (the command line, a job file) pass no cache and compute every target, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

STYLE_CACHE_BYTES = 256 << 20  # a style's targets at one scale are a few MiB (C x C per layer)
# Values without tensors (the balance's trials) weigh nothing against the bytes: the count bounds them.
STYLE_CACHE_ENTRIES = 1024

T = TypeVar("T")


def held_bytes(value: Any) -> int:
    """The bytes of the tensors in `value` (nested in dicts, sequences and dataclasses)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(held_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(held_bytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(held_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


def pixels_digest(pixels: np.ndarray) -> str:
    """What identifies an image's pixels in a key: their shape, type and a hash of their bytes."""
    data = np.ascontiguousarray(pixels)
    digest = hashlib.blake2b(data.view(np.uint8).reshape(-1), digest_size=16).hexdigest()
    return f"{data.dtype}{data.shape}:{digest}"


def file_stamp(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """A weights file as a key: its path, size and modification time (a rewritten file is another)."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


class StyleCache:
    """Targets by key, least recently used first out once they hold more than `budget` bytes.

    Thread-safe; `computed` and `hits` count what `get` did, for the tests and the benchmark."""

    def __init__(self, budget: int = STYLE_CACHE_BYTES, max_entries: int = STYLE_CACHE_ENTRIES) -> None:
        self.budget = budget
        self.max_entries = max_entries
        self.computed = 0
        self.hits = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value kept under `key`, or `compute()`'s, kept for next time when it fits the budget."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        value = compute()  # outside the lock: another device's worker need not wait for this one
        size = held_bytes(value)
        with self._lock:
            self.computed += 1
            if key not in self._entries:
                self._add(key, value, size)
        return value

    def peek(self, key: Hashable) -> Any | None:
        """The value kept under `key`, or None; nothing computed, nothing counted."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any) -> None:
        """Keep `value` under `key` in place of what was there (dropped when it cannot fit the budget)."""
        size = held_bytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= old[1]
            self._add(key, value, size)

    def _add(self, key: Hashable, value: Any, size: int) -> None:
        """Under the lock: keep `value` when it fits the budget at all, the least recently used out."""
        if size > self.budget:
            return
        self._entries[key] = (value, size)
        self._held += size
        while self._held > self.budget or len(self._entries) > self.max_entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._held -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0

    def scoped(self, *scope: Hashable) -> ScopedCache:
        return ScopedCache(self, tuple(scope))


@dataclasses.dataclass(frozen=True)
class ScopedCache:
    """One run's view of a `StyleCache`: every key also holds `scope`, what the whole run shares."""

    cache: StyleCache
    scope: tuple[Hashable, ...]

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        return self.cache.get((self.scope, key), compute)

    def peek(self, key: Hashable) -> Any | None:
        return self.cache.peek((self.scope, key))

    def put(self, key: Hashable, value: Any) -> None:
        self.cache.put((self.scope, key), value)
