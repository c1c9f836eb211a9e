"""A small cache for pages that are expensive to build and the same for many viewers.

Why it exists: 总览 over 500 venues costs ~150 ms of CPU to build and render, and one uvicorn
worker (one GIL) serves it to every viewer and every live stream. Between two changes every viewer
with the same role and scope sees the same page, so one build can serve them all.

An entry is valid while two things hold:

- the caller's *signature* (a cheap probe of what the page shows, see
  :func:`collector.web.signature.signature`) equals the one taken before the entry was built, so a
  change in the store shows in the very next response;
- it is younger than ``max_age`` seconds of the page clock, so what the signature does not cover
  (heartbeat figures, a renamed venue) still moves.

Single flight: one builder per key at a time. Requests that find the signature moved wait for
the builder and then use its result when it matches their signature, so a change seen by eight
viewers at once costs one build, not eight. Requests that find the entry merely too old while it
is being rebuilt get the current copy at once. A builder gets the previous value, so it can keep
what did not change (the overview keeps its rendered sections when its data is equal).

The key is the caller's business. Pages key by role and venue scope, so a venue operator's view
can never be served to anyone else.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")

_MAKE_LOCK = threading.Lock()  # guards creating a cache on an app's state


@dataclass(frozen=True)
class Entry(Generic[V]):
    """One built value with what it was built under."""

    signature: Any
    built_at: float
    value: V


class SignedCache(Generic[V]):
    """Values per key, valid for one signature and at most ``max_age`` seconds; built one at a time."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.builds = 0  # how many times a value was built (tests and the benchmark read it)
        self._entries: dict[Hashable, Entry[V]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, signature: Any, now: float, build: Callable[[V | None], V]) -> V:
        """The value for ``key`` when its entry matches ``signature`` and is fresh at ``now``; else
        ``build(previous value or None)`` it (read *after* ``signature`` was taken, so it is at least
        as new), once per key at a time.

        While one request rebuilds an entry that is merely older than ``max_age`` (same signature),
        the others get the current copy instead of waiting: nothing they could see has changed.
        A new signature always waits for the new build."""
        entry = self._entries.get(key)
        if self._fresh(entry, signature, now):
            return entry.value  # type: ignore[union-attr]
        lock = self._lock(key)
        if not lock.acquire(blocking=False):
            if entry is not None and entry.signature == signature:
                return entry.value
            lock.acquire()
        try:
            entry = self._entries.get(key)  # another request may have built it while we waited
            if self._fresh(entry, signature, now):
                return entry.value  # type: ignore[union-attr]
            value = build(entry.value if entry is not None else None)
            self._entries[key] = Entry(signature, now, value)
            self.builds += 1
            return value
        finally:
            lock.release()

    def keys(self) -> set[Hashable]:
        """The keys that have an entry (tests check that roles and venues never share one)."""
        return set(self._entries)

    def clear(self) -> None:
        """Forget every entry (an administrative change the signature cannot see)."""
        with self._guard:
            self._entries.clear()

    def _fresh(self, entry: Entry[V] | None, signature: Any, now: float) -> bool:
        """Same signature and not older than ``max_age`` (a clock that went back counts as stale)."""
        return entry is not None and entry.signature == signature and 0 <= now - entry.built_at < self.max_age

    def _lock(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def cache_on(state: Any, name: str, max_age: float) -> SignedCache[Any]:
    """The cache called ``name`` on an app's ``state``, made on first use (the app factory need not know)."""
    with _MAKE_LOCK:
        cache = getattr(state, name, None)
        if cache is None:
            cache = SignedCache(max_age)
            setattr(state, name, cache)
        return cache
