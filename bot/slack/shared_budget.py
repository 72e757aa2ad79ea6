"""One Slack budget for every replica: the budgets of `bot.slack.budget`, kept in Postgres.

Slack counts calls per workspace (chat.update, chat.*Stream) or per channel (chat.postMessage)
whichever replica makes them, so with several replicas the budgets must be one. Each
reservation is one statement, `public.reserve_slack_budget` (sql/008: GCRA on the database
clock), which answers with the seconds to sleep before the call, or "not within max_wait". The
caller sleeps that wait locally. A 429 pushes the key (`public.push_slack_budget`) so every
replica backs off together. Keys: `update:<team>`, `post:<channel>`, and the named buckets
(`start:<team>`, `append:<team>`, `stop:<team>`, `files:<team>`, `reads:<team>`). Rates and
bursts are those of the in-process `Budgets` given (so the bench's time scaling applies).

When Postgres does not answer (an error, or a reservation statement slower than `timeout`), the
replica falls back to local buckets holding 1/`POWABOT_MAX_REPLICAS` of each budget: together the
replicas still stay under Slack's limit. It says so once (`budget_fallback_started`, error
level; metric `powabot_budget_fallback_active` 1), tries Postgres again every `probe_every`
seconds (a real reservation), and says `budget_fallback_ended` (metric 0) when one succeeds.
Waiting for a free connection of the budget pool is not counted as Postgres failing (a burst
of final edits queues there while Postgres is merely busy): such a reservation is served by the
local share alone, and only when no reservation succeeded for `BUSY_IS_DOWN_AFTER` seconds does
it start the fallback. Every reservation's database time, timed-out ones included, is kept in
`timings`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import structlog

from bot.errors import StoreBusy
from bot.metrics import BUDGET_DB_SECONDS, BUDGET_FALLBACK_ACTIVE
from bot.settings import Settings
from bot.slack.budget import MAX_IDLE_BUCKETS, BudgetBook, Budgets, Clock, TokenBucket

log = structlog.get_logger(__name__)

RESERVE_TIMEOUT = 0.5  # seconds: a slower reservation counts as "Postgres unreachable"
PROBE_EVERY = 5.0  # seconds between tries of Postgres while falling back
BUSY_IS_DOWN_AFTER = 2.0  # seconds without a reservation: "no free connection" is "down"
MAX_WAIT_CAP = 3600.0  # what "wait as long as it takes" becomes in SQL (no infinite interval)
TIMINGS_KEPT = 10_000  # recent reservation durations kept for measurements (`timings`)


@runtime_checkable
class BudgetStore(Protocol):
    """What a store offers to keep budgets (PostgresStore, SupabaseStore; not SQLite)."""

    async def reserve_budget(
        self,
        key: str,
        *,
        interval: float,
        burst: float,
        max_wait: float,
        reserve: float = 0.0,
        step_limit: float | None = None,
    ) -> float | None:
        """The wait, or None; StoreBusy when no connection came free within `step_limit`, and
        StoreError when the statement failed or took longer than `step_limit`."""

    async def push_budget(self, key: str, seconds: float) -> None: ...


def _share(burst: float, replicas: int) -> float:
    """A replica's part of a burst: at least one token, so every budget can be spent."""
    return max(1.0, burst / replicas)


@dataclass(frozen=True)
class SharedBudget:
    """One key of the shared budgets (`Budget`); equal to every other handle on that key."""

    book: SharedBudgets = field(compare=False, repr=False)
    key: str
    interval: float  # seconds per call (1 / rate)
    burst: float
    local: TokenBucket = field(compare=False, repr=False)  # this replica's share, for fallback

    async def reserve(self, *, max_wait: float, reserve: float = 0.0) -> float | None:
        return await self.book.reserve(self, max_wait=max_wait, reserve=reserve)

    async def push(self, seconds: float) -> None:
        await self.book.push(self, seconds)

    def wait_hint(self, reserve: float = 0.0) -> float:
        """Unknown without asking Postgres: one interval (a refused edit retries after it)."""
        if self.book.falling_back:
            return self.local.wait_hint(self.book.local_reserve(self, reserve))
        return self.interval


class SharedBudgets:
    """`BudgetBook` over a store's shared budget table, with a local fallback (see module)."""

    def __init__(
        self,
        store: BudgetStore,
        base: Budgets,
        *,
        max_replicas: int,
        timeout: float = RESERVE_TIMEOUT,
        probe_every: float = PROBE_EVERY,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_replicas < 1:
            raise ValueError(f"max_replicas must be at least 1, got {max_replicas}")
        self.store = store
        self.base = base
        self.replicas = max_replicas
        self.timeout = timeout
        self.probe_every = probe_every
        self.clock = clock
        self.local = Budgets(
            edits_per_minute=base.edits_per_minute / max_replicas,
            edit_burst=_share(base.edit_burst, max_replicas),
            posts_per_second=base.posts_per_second / max_replicas,
            post_burst=_share(base.post_burst, max_replicas),
            final_reserve=base.final_reserve,
            clock=base.clock,
            sleep=base.sleep,
        )
        self.falling_back = False
        self.timings: collections.deque[float] = collections.deque(maxlen=TIMINGS_KEPT)
        self._fallback_since = 0.0
        self._last_success = clock()
        self._next_probe = 0.0
        self._probing = False
        self._handles: dict[str, SharedBudget] = {}
        BUDGET_FALLBACK_ACTIVE.set(0)

    # -- BudgetBook -------------------------------------------------------------------------

    @property
    def edit_reserve(self) -> float:
        return self.base.edit_reserve

    def edits(self, team_id: str) -> SharedBudget:
        return self._handle(
            f"update:{team_id}",
            60.0 / self.base.edits_per_minute,
            self.base.edit_burst,
            lambda: self.local.edits(team_id),
        )

    def posts(self, channel_id: str) -> SharedBudget:
        return self._handle(
            f"post:{channel_id}",
            1.0 / self.base.posts_per_second,
            self.base.post_burst,
            lambda: self.local.posts(channel_id),
        )

    def bucket(self, name: str, rate: float, capacity: float) -> SharedBudget:
        return self._handle(
            name,
            1.0 / rate,
            capacity,
            lambda: self.local.bucket(name, rate / self.replicas, _share(capacity, self.replicas)),
        )

    def _handle(
        self, key: str, interval: float, burst: float, local: Callable[[], TokenBucket]
    ) -> SharedBudget:
        found = self._handles.get(key)
        if found is None or found.interval != interval or found.burst != burst:
            if len(self._handles) >= MAX_IDLE_BUCKETS:
                self._handles.clear()  # handles hold no state: the budgets are in Postgres
            found = self._handles[key] = SharedBudget(self, key, interval, burst, local())
        return found

    # -- reservations -----------------------------------------------------------------------

    def local_reserve(self, budget: SharedBudget, reserve: float) -> float:
        """`reserve` tokens of the shared burst, as the same share of the local bucket's."""
        return reserve * budget.local.capacity / budget.burst if budget.burst else 0.0

    async def reserve(
        self, budget: SharedBudget, *, max_wait: float, reserve: float
    ) -> float | None:
        probe = self.falling_back
        if probe and not self._probe_due():
            return await budget.local.reserve(
                max_wait=max_wait, reserve=self.local_reserve(budget, reserve)
            )
        started = time.perf_counter()
        try:
            # The store bounds the wait for a connection and the statement by `step_limit` each;
            # this outer bound only guards against a store that ignores it.
            wait = await asyncio.wait_for(
                self.store.reserve_budget(
                    budget.key,
                    interval=budget.interval,
                    burst=budget.burst,
                    max_wait=min(max_wait, MAX_WAIT_CAP),
                    reserve=reserve,
                    step_limit=self.timeout,
                ),
                2 * self.timeout + 0.5,
            )
        except StoreBusy as exc:  # queued behind other reservations: busy, maybe not down
            self._timed(started)
            if self.clock() - self._last_success >= BUSY_IS_DOWN_AFTER:
                self._fall_back(exc)
            return await budget.local.reserve(
                max_wait=max_wait, reserve=self.local_reserve(budget, reserve)
            )
        except Exception as exc:  # whatever Postgres does, the answer goes on (locally)
            self._timed(started)
            self._fall_back(exc)
            return await budget.local.reserve(
                max_wait=max_wait, reserve=self.local_reserve(budget, reserve)
            )
        finally:
            if probe:
                self._probing = False
        self._timed(started)
        self._last_success = self.clock()
        self._recovered()
        if wait is not None:
            # Keep this replica's share in step with what it spends: a fallback then starts from
            # what is left of its share, not from a full burst on top of the shared one (three
            # replicas bursting at once right after a switch would go over Slack's limit).
            budget.local.try_take()
        return wait

    def _timed(self, started: float) -> None:
        """Database time of one reservation (timed-out or failed ones too), for measurements."""
        took = time.perf_counter() - started
        self.timings.append(took)
        BUDGET_DB_SECONDS.observe(took)

    async def push(self, budget: SharedBudget, seconds: float) -> None:
        """Push the shared key (and this replica's share, in case Postgres goes away)."""
        await budget.local.push(seconds)
        if self.falling_back:
            return
        # Like a local bucket: nothing for `seconds`, then start from empty (a full refill).
        total = seconds + budget.burst * budget.interval
        try:
            await asyncio.wait_for(self.store.push_budget(budget.key, total), self.timeout)
        except Exception as exc:
            self._fall_back(exc)

    # -- fallback ---------------------------------------------------------------------------

    def _probe_due(self) -> bool:
        """While falling back: True for one caller every `probe_every` seconds."""
        if self._probing or self.clock() < self._next_probe:
            return False
        self._probing = True
        self._next_probe = self.clock() + self.probe_every
        return True

    def _fall_back(self, exc: BaseException) -> None:
        self._next_probe = self.clock() + self.probe_every
        if self.falling_back:
            return
        self.falling_back = True
        self._fallback_since = self.clock()
        BUDGET_FALLBACK_ACTIVE.set(1)
        log.error(
            "budget_fallback_started",
            error_type=type(exc).__name__,
            error=str(exc)[:300],
            replicas=self.replicas,
            share=round(1.0 / self.replicas, 4),
        )

    def _recovered(self) -> None:
        if not self.falling_back:
            return
        self.falling_back = False
        BUDGET_FALLBACK_ACTIVE.set(0)
        log.warning("budget_fallback_ended", after=round(self.clock() - self._fallback_since, 3))


def make_budgets(
    settings: Settings, store: object, budgets: BudgetBook | None = None
) -> BudgetBook:
    """The budgets a bot uses: shared in Postgres when its store can keep them (Postgres or
    Supabase), else in-process. Rates and bursts come from `budgets` (a `Budgets`), else from
    settings."""
    base = budgets or Budgets(edits_per_minute=settings.POWABOT_WORKSPACE_EDITS_PER_MINUTE)
    if isinstance(base, Budgets) and isinstance(store, BudgetStore):
        return SharedBudgets(store, base, max_replicas=settings.POWABOT_MAX_REPLICAS)
    return base
