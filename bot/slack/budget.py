"""Rate budgets: token buckets shared by every answer this process is streaming.

Slack allows ~50 `chat.update` per minute per workspace (Tier 3) and ~1 `chat.postMessage` per
second per channel. Intermediate edits only spend a token when a reserve stays free, so final
edits (the complete answer) always get through first. A 429 pauses the whole bucket for
`Retry-After` seconds. aiolimiter was considered: it has no "take unless below a reserve" and no
pause, which are exactly the two things the priority scheme needs.

Streams see every budget through one interface, `Budget` (`reserve` / `push` / `wait_hint`),
and a set of them through `BudgetBook`: `Budgets` here is the in-process one (one process, e.g.
SQLite); `bot.slack.shared_budget.SharedBudgets` keeps the same budgets in Postgres for every
replica at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Budget(Protocol):
    """One rate budget (a workspace's chat.update, a channel's chat.postMessage, ...)."""

    async def reserve(self, *, max_wait: float, reserve: float = 0.0) -> float | None:
        """Reserve one call: the seconds to sleep before making it (0: now), or None when that
        would be more than `max_wait` seconds (nothing is reserved then). `reserve` tokens must
        stay free for others (intermediate edits leave room for final ones)."""
        ...

    async def push(self, seconds: float) -> None:
        """Slack said 429 (or a 5xx said Retry-After): nobody spends for `seconds`, then the
        budget starts again from empty."""
        ...

    def wait_hint(self, reserve: float = 0.0) -> float:
        """About how many seconds until a `reserve(max_wait=0, reserve=...)` could succeed."""
        ...


class BudgetBook(Protocol):
    """The budgets streams reserve from, by key."""

    @property
    def edit_reserve(self) -> float:
        """Tokens of a workspace's chat.update budget intermediate edits must leave free."""
        ...

    def edits(self, team_id: str) -> Budget: ...

    def posts(self, channel_id: str) -> Budget: ...

    def bucket(self, name: str, rate: float, capacity: float) -> Budget:
        """Any other named budget, e.g. `append:<team>` (chat.appendStream per workspace)."""
        ...


class TokenBucket:
    """`rate` tokens per second up to `capacity`; `pause()` stops refills for a while.

    `clock` and `sleep` are injectable: a test can drive the bucket on a fake clock.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._level = capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._queued = 0  # callers of take() waiting for their turn

    def _refill(self) -> float:
        now = self._clock()
        start = max(self._stamp, self._paused_until)
        if now > start:
            self._level = min(self.capacity, self._level + (now - start) * self.rate)
        self._stamp = max(now, self._stamp)
        return now

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def try_take(self, reserve: float = 0.0) -> bool:
        """Take one token now if `reserve` tokens would still be left; never waits."""
        now = self._refill()
        if now < self._paused_until or self._lock.locked():
            return False
        if self._level - 1.0 >= reserve:
            self._level -= 1.0
            return True
        return False

    def wait_hint(self, reserve: float = 0.0) -> float:
        """Seconds until `try_take(reserve)` could succeed, if nobody else takes first."""
        now = self._refill()
        missing = max(0.0, reserve + 1.0 - self._level) + self._queued
        return max(self._paused_until - now, 0.0) + missing / self.rate

    async def take(self) -> None:
        """Wait for a token (first come, first served among waiters) and take it."""
        self._queued += 1
        try:
            async with self._lock:
                while True:
                    now = self._refill()
                    if now >= self._paused_until and self._level >= 1.0:
                        self._level -= 1.0
                        return
                    wait = max(self._paused_until - now, (1.0 - self._level) / self.rate, 0.005)
                    await self._sleep(wait)
        finally:
            self._queued -= 1

    async def reserve(self, *, max_wait: float, reserve: float = 0.0) -> float | None:
        """`Budget.reserve`: a token now, or wait for one in line (here, inside this call:
        the wait returned is then 0) when the line is at most `max_wait` seconds long. A
        caller that may wait leaves no reserve: `reserve` only applies to `max_wait` 0."""
        if self.try_take(reserve):
            return 0.0
        if max_wait <= 0 or self.wait_hint() > max_wait:
            return None
        await self.take()
        return 0.0

    async def push(self, seconds: float) -> None:
        """`Budget.push`: `pause(seconds)`."""
        self.pause(seconds)

    def pause(self, seconds: float) -> None:
        """Slack said 429: spend nothing for `seconds`, then start again from empty."""
        self._refill()
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._level = 0.0


MAX_IDLE_BUCKETS = 1000


def _get(buckets: dict[str, TokenBucket], key: str, make: Callable[[], TokenBucket]) -> TokenBucket:
    """The bucket for `key`; a long-running bot forgets full (idle) buckets as new ones come."""
    bucket = buckets.get(key)
    if bucket is None:
        if len(buckets) >= MAX_IDLE_BUCKETS:
            for name in [k for k, b in buckets.items() if b.level >= b.capacity]:
                del buckets[name]
        bucket = buckets[key] = make()
    return bucket


@dataclass
class Budgets:
    """The buckets of one process: chat.update per workspace, chat.postMessage per channel."""

    # About 10 % under Slack's published figures, bursts smaller still: Slack counts arrivals on
    # its own clock, and requests sent evenly here arrive bunched there (network, event loop).
    edits_per_minute: float = 45.0
    edit_burst: float = 8.0
    posts_per_second: float = 0.9
    post_burst: float = 2.0
    final_reserve: float = 0.3  # share of the edit burst intermediate edits must leave free
    clock: Clock = time.monotonic  # what every bucket reads (a test may pass a fake clock)
    sleep: Sleep = asyncio.sleep  # how a bucket waits for its next token
    _edits: dict[str, TokenBucket] = field(default_factory=dict)
    _posts: dict[str, TokenBucket] = field(default_factory=dict)
    _other: dict[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, name: str, rate: float, capacity: float) -> TokenBucket:
        """Any other named bucket (e.g. chat.appendStream per workspace)."""
        found = self._other.get(name)
        if found is None:
            found = self._other[name] = self._new(rate, capacity)
        return found

    def _new(self, rate: float, capacity: float) -> TokenBucket:
        return TokenBucket(rate, capacity, self.clock, self.sleep)

    def edits(self, team_id: str) -> TokenBucket:
        return _get(
            self._edits, team_id, lambda: self._new(self.edits_per_minute / 60.0, self.edit_burst)
        )

    def posts(self, channel_id: str) -> TokenBucket:
        return _get(
            self._posts, channel_id, lambda: self._new(self.posts_per_second, self.post_burst)
        )

    @property
    def edit_reserve(self) -> float:
        return self.edit_burst * self.final_reserve
