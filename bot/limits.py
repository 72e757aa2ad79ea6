"""Limits that keep the bot standing: how many answers run at once, and one at a time per thread.

`Admission` lets at most `limit` answers run together; the rest wait in arrival order (FIFO), so a
burst is served first come, first served instead of opening unbounded Powabase streams.
`KeyedLocks` holds one lock per thread and user: a follow-up waits for the answer before it in the
same thread (one Powabase session never runs two turns at once); locks vanish when unused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Hashable


class Admission:
    """A FIFO gate for at most `limit` concurrent holders."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"Admission limit must be >= 1, got {limit}")
        self.limit = limit
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        """Holders waiting for a slot right now."""
        return sum(1 for w in self._waiters if not w.done())

    @property
    def available(self) -> bool:
        return self.active < self.limit and not self.queued

    def try_enter(self) -> bool:
        """Take a slot at once if one is free and nobody is ahead in the queue."""
        if self.available:
            self.active += 1
            return True
        return False

    def join(self) -> asyncio.Future[None]:
        """Take a place in line now (no await: nobody arriving later can get ahead); the
        future is done once the slot is ours. Hand it back with `release`, whatever happened."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.try_enter():
            waiter.set_result(None)
        else:
            self._waiters.append(waiter)
        return waiter

    def release(self, waiter: asyncio.Future[None]) -> None:
        """Give back what `join` gave: the slot if it was granted, else the place in line."""
        if waiter.done() and not waiter.cancelled():
            self.leave()
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    async def enter(self) -> None:
        """Wait in line for a slot (cancellable without losing or leaking one)."""
        waiter = self.join()
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            self.release(waiter)  # the slot, if handed over just as we were cancelled
            raise

    def leave(self) -> None:
        """Give the slot back, straight to the longest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands; `active` stays the same
                return
        self.active -= 1


class KeyedLocks:
    """One asyncio.Lock per key, created on demand and dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def busy(self, key: Hashable) -> bool:
        """Someone holds (or waits for) the lock of `key`."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
