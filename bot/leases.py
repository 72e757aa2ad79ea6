"""Leases on answers: each Slack message answered by one replica, and finished if it dies.

The replica that claims a message (store `claim_answer`, keyed by team + channel + ts) holds a
lease on its answer, renewed every `renew_every` seconds while it works on it (running, waiting
in line or for budget, finishing). Every replica scans every `scan_every` seconds for answers
whose lease expired (their replica died) or was released (their replica stopped) and takes them
over: the `Answerer` runs the question again in the thread's Powabase session and finishes the
same Slack message. With the defaults (lease 10 s, scan every 2.5 s) a dead replica's answers
are taken over within about 13 s.

A replica that loses a lease stops writing to that answer at once (`watch`: the answer's task
is cancelled, and it writes nothing more): when a renewal finds that another replica took the
answer, and also when no renewal succeeded for `lease - renew_every` seconds (it fences itself:
cut off from the store, it cannot know whether another replica took over, and after `lease`
one may). Answers already delivered whose end the store has not heard yet are never given up:
they are renewed and told finished as soon as the store answers.

After the store failed, a replica takes nothing over until the store has answered again for a
whole lease: every live replica has renewed its own answers by then, so only the answers of
replicas that really died are taken over (not the ones delivered during the outage).

The store's clock decides expiry (Postgres `now()`), never the replicas'. One process with
SQLite runs the same scan: after a crash, the next start finishes what was left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable

import structlog

from bot.errors import StoreError
from bot.store.base import AnswerClaim, AnswerKey, OpenAnswer, SessionStore

log = structlog.get_logger(__name__)

LEASE_SECONDS = 10.0  # POWABOT_LEASE_SECONDS
TAKEOVER_BATCH = 10  # answers one scan takes over at most
SCAN_EVERY_MAX = 2.5  # seconds: the scan interval is a quarter of the lease, at most this
# A store write on the answer's path (reply ts, done, release) waits at most this long: a slow
# store must not hold a reply back; the lease covers what did not get written.
STORE_WRITE_TIMEOUT = 3.0
FINISH_CONCURRENCY = 4  # store writes at once when telling the store about finished answers


def replica_id() -> str:
    """This process among the replicas: hostname:pid:random (a restarted pod differs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """This replica's leases on answers: claim, renew, record the reply, finish, release, and
    the takeover scan (`start(on_takeover)` … `stop()`)."""

    def __init__(
        self,
        store: SessionStore,
        *,
        lease: float = LEASE_SECONDS,
        owner: str | None = None,
        renew_every: float | None = None,
        scan_every: float | None = None,
        batch: int = TAKEOVER_BATCH,
        write_timeout: float = STORE_WRITE_TIMEOUT,
    ) -> None:
        self.store = store
        self.lease = lease
        self.owner = owner or replica_id()
        self.renew_every = renew_every if renew_every is not None else lease / 3
        self.scan_every = scan_every if scan_every is not None else min(lease / 4, SCAN_EVERY_MAX)
        # No renewal for this long: the answer may be taken over soon; stop writing to it.
        self.fence_after = max(self.lease - self.renew_every, self.renew_every / 2)
        self.batch = batch
        self.write_timeout = write_timeout
        self.held: set[AnswerKey] = set()  # answers this replica works on, lease kept alive
        self._unfinished: set[AnswerKey] = set()  # finished, but the store has not heard yet
        # Claimed while the store failed: the row may or may not exist. Not fenced (nobody
        # can take over a row that does not exist); claimed again once the store answers.
        self._tentative: dict[AnswerKey, AnswerClaim] = {}
        self._replies: dict[AnswerKey, tuple[str, bool]] = {}  # for tentative claims
        self._renewed_at: dict[AnswerKey, float] = {}  # loop time the lease last ran from
        self._hooks: dict[AnswerKey, Callable[[], None]] = {}  # called when the lease is lost
        self._lost: set[AnswerKey] = set()  # lost while their answer still runs here
        # Lost for want of a renewal only (the row may still be ours): if the answer gets
        # delivered after all (its final edit was under way), the store is still told.
        self._fenced_out: set[AnswerKey] = set()
        self._store_failing = False
        self._store_back_at: float | None = None  # the store answered again (after failing)
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[int] | None = None  # telling the store what finished

    # -- the answer's side --------------------------------------------------------------------

    async def claim(self, claim: AnswerClaim) -> bool:
        """True when this replica answers `claim` (it holds the lease from now on); False for
        a message another delivery already claimed. When the store cannot tell (an error,
        perhaps after the row was written), True: answering beats not answering, and the key
        is held so that the row, if it exists, is renewed, gets its reply and is finished."""
        started = _now()
        try:
            async with asyncio.timeout(self.write_timeout):
                ours = await self.store.claim_answer(claim, owner=self.owner, lease=self.lease)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_claim_failed", error_type=type(exc).__name__, error=str(exc))
            self._hold(claim.key, started)
            self._tentative[claim.key] = claim
            return True
        if ours:
            self._hold(claim.key, started)
        return ours

    def adopt(self, answer: OpenAnswer, at: float | None = None) -> None:
        """An answer the scan took over is held (renewed) like one claimed here."""
        self._hold(answer.claim.key, _now() if at is None else at)

    def _hold(self, key: AnswerKey, at: float) -> None:
        self.held.add(key)
        self._renewed_at[key] = at
        self._lost.discard(key)
        self._fenced_out.discard(key)

    def watch(self, key: AnswerKey, on_lost: Callable[[], None]) -> None:
        """Call `on_lost` (once) if the lease on `key` is lost while its answer runs here:
        then the answer must write nothing more. `forget(key, on_lost)` when it ends."""
        self._hooks[key] = on_lost
        if key in self._lost:
            self._hooks.pop(key)
            asyncio.get_running_loop().call_soon(on_lost)

    def lost(self, key: AnswerKey) -> bool:
        """The lease on `key` was lost (another replica took it, or it was not renewed)."""
        return key in self._lost

    def forget(self, key: AnswerKey, on_lost: Callable[[], None]) -> None:
        """The answer watched with `on_lost` ends: no more hook for it."""
        if self._hooks.get(key) is on_lost:
            del self._hooks[key]
        elif key in self._hooks:
            return  # a newer answer of this key (taken over again) watches it now
        self._lost.discard(key)
        self._fenced_out.discard(key)

    async def posted(self, key: AnswerKey, reply_ts: str, *, native: bool) -> None:
        """Remember the reply message, so that a replica taking over edits it (never a second
        message). Logged, not raised, when the store fails."""
        if key not in self.held:
            return
        if key in self._tentative:
            self._replies[key] = (reply_ts, native)
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.store.set_reply(key, owner=self.owner, reply_ts=reply_ts, native=native)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_reply_unrecorded", error_type=type(exc).__name__, error=str(exc))

    async def finished(self, key: AnswerKey) -> None:
        """The answer reached its final Slack state: done, never taken over or released.
        When the store cannot be told now, the lease is kept alive and it is told later."""
        if key in self._fenced_out:  # delivered while fenced: done, if the row is still ours
            self._fenced_out.discard(key)
            self.held.add(key)
        if key not in self.held:
            return  # released, lost to another replica, or told already
        self._unfinished.add(key)  # from now on never released nor fenced
        await self._tell_finished(key)

    async def _tell_finished(self, key: AnswerKey) -> bool:
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.store.finish_answer(key, owner=self.owner)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_finish_unrecorded", error_type=type(exc).__name__, error=str(exc))
            return False
        self._drop(key)
        return True

    def _drop(self, key: AnswerKey) -> None:
        self.held.discard(key)
        self._unfinished.discard(key)
        self._tentative.pop(key, None)
        self._replies.pop(key, None)
        self._renewed_at.pop(key, None)

    async def flush_finished(self) -> int:
        """Tell the store about answers finished while it failed (a few writes at once);
        returns how many are still untold. Callers bound the time it may take."""
        gate = asyncio.Semaphore(FINISH_CONCURRENCY)

        async def tell(key: AnswerKey) -> None:
            async with gate:
                if key in self._unfinished:
                    await self._tell_finished(key)

        keys = sorted(self._unfinished, key=lambda k: k.message_ts)
        if keys:
            await asyncio.gather(*(tell(k) for k in keys))
        return len(self._unfinished)

    async def release(self, keys: list[AnswerKey]) -> int:
        """Hand these answers to the other replicas now (this one is stopping). Answers
        already delivered are never released (the store hears they are done instead)."""
        keys = [k for k in keys if k in self.held and k not in self._unfinished]
        if not keys:
            return 0
        for key in keys:
            self._drop(key)
        try:
            async with asyncio.timeout(self.write_timeout):
                released = await self.store.release_answers(keys, owner=self.owner)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_release_failed", error_type=type(exc).__name__, count=len(keys))
            return 0
        log.info("answers_released", count=released)
        return released

    async def release_all(self) -> int:
        """At the end of a stop: every answer still held goes to the other replicas."""
        return await self.release(sorted(self.held, key=lambda k: k.message_ts))

    # -- renewals and the takeover scan -------------------------------------------------------

    def start(self, on_takeover: Callable[[OpenAnswer], None], room: Callable[[], int]) -> None:
        """Renew and scan in the background; `on_takeover` starts each answer taken over,
        `room()` says how many more this replica may take now."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(on_takeover, room), name="leases")

    async def stop(self) -> None:
        """Stop scanning (renewals stop too: release or finish what is held next)."""
        task, self._task = self._task, None
        flushing, self._flushing = self._flushing, None
        for running in (task, flushing):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    async def _run(
        self, on_takeover: Callable[[OpenAnswer], None], room: Callable[[], int]
    ) -> None:
        loop = asyncio.get_running_loop()
        next_renew = next_scan = loop.time()
        while True:
            try:
                self._fence()
                if loop.time() >= next_renew:
                    next_renew = loop.time() + self.renew_every
                    await self._renew()
                    self._fence()
                    self._flush_in_background()
                if loop.time() >= next_scan:
                    next_scan = loop.time() + self.scan_every
                    await self._scan(on_takeover, room())
            except Exception:  # a bug here must not end renewals and takeovers for good
                log.exception("answer_leases_tick_crashed")
            wake = min(next_renew, next_scan, self._next_fence())
            await asyncio.sleep(max(0.0, wake - loop.time()))

    def _flush_in_background(self) -> None:
        """Tell the store about answers finished while it failed, beside the renewals (a
        store slow to finish must not hold a renewal back), in `write_timeout` at most."""
        if not self._unfinished or self._store_failing:
            return
        if self._flushing is not None and not self._flushing.done():
            return

        async def flush() -> int:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.write_timeout):
                    return await self.flush_finished()
            return len(self._unfinished)

        self._flushing = asyncio.create_task(flush(), name="leases-flush")

    def _fenced(self) -> list[AnswerKey]:
        """Answers still being worked on here whose lease may be over (no renewal lately)."""
        return [
            k
            for k in self.held
            if k not in self._unfinished and k not in self._tentative and k in self._renewed_at
        ]

    def _next_fence(self) -> float:
        times = [self._renewed_at[k] + self.fence_after for k in self._fenced()]
        return min(times, default=float("inf"))

    def _fence(self) -> None:
        """Give up every answer not renewed for `fence_after` seconds: another replica may
        take it over soon, so this one stops writing to it now."""
        now = _now()
        for key in self._fenced():
            if now >= self._renewed_at[key] + self.fence_after:
                self._lose(key, "not_renewed")

    def _lose(self, key: AnswerKey, reason: str) -> None:
        self._drop(key)
        log.warning("answer_lease_lost", channel=key.channel_id, ts=key.message_ts, reason=reason)
        self._lost.add(key)  # an answer not watching yet stops as soon as it does
        if reason == "not_renewed":
            self._fenced_out.add(key)
        hook = self._hooks.pop(key, None)
        if hook is not None:
            hook()

    def _store_answered(self) -> None:
        if self._store_failing:
            self._store_failing = False
            self._store_back_at = _now()
            log.info("answer_leases_store_back")

    def _store_failed(self) -> None:
        self._store_failing = True
        self._store_back_at = None

    async def _renew(self) -> None:
        keys = list(self.held)
        if not keys:
            return
        started = _now()
        # Back before the first lease would be given up (`_fence`), or no use at all (a
        # floor, so that a tick the event loop ran late still gets a real try).
        floor = min(0.5, self.fence_after / 2)
        within = max(floor, min(self.fence_after, self._next_fence() - started))
        try:
            async with asyncio.timeout(within):
                renewed = await self.store.renew_leases(keys, owner=self.owner, lease=self.lease)
        except (StoreError, TimeoutError) as exc:
            self._store_failed()
            log.error(
                "answer_leases_unrenewed",
                error_type=type(exc).__name__,
                error=str(exc),
                count=len(keys),
            )
            return
        self._store_answered()
        for key in keys:
            if key not in self.held:
                continue  # finished or released meanwhile
            if key in renewed:
                self._renewed_at[key] = started
                self._tentative.pop(key, None)
                self._replies.pop(key, None)
            elif key in self._tentative:
                await self._claim_again(key, started)
            elif key in self._unfinished:
                self._drop(key)  # delivered; another replica took the row meanwhile
            else:
                self._lose(key, "taken_over")

    async def _claim_again(self, key: AnswerKey, started: float) -> None:
        """A claim that failed earlier: the store answers again and has no row of ours. A
        delivered answer needs none; a running one claims it now (or gives way to the
        replica that has it)."""
        if key in self._unfinished:
            self._drop(key)
            return
        claim = self._tentative[key]
        try:
            async with asyncio.timeout(self.write_timeout):
                ours = await self.store.claim_answer(claim, owner=self.owner, lease=self.lease)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_claim_failed", error_type=type(exc).__name__, error=str(exc))
            return
        if not ours:
            self._lose(key, "claimed_elsewhere")
            return
        self._tentative.pop(key, None)
        self._renewed_at[key] = started
        reply = self._replies.pop(key, None)
        if reply is not None:
            await self.posted(key, reply[0], native=reply[1])

    def _may_take_over(self) -> bool:
        """Not while the store fails, nor for a lease after it is back (see module)."""
        if self._store_failing:
            return False
        back = self._store_back_at
        return back is None or _now() - back >= self.lease

    async def _scan(self, on_takeover: Callable[[OpenAnswer], None], room: int) -> None:
        limit = min(self.batch, room) if self._may_take_over() else 0
        if limit <= 0 and not self._store_failing:
            return
        started = _now()
        try:  # limit 0 while the store fails: only asks whether it answers again
            async with asyncio.timeout(self.write_timeout):
                taken = await self.store.take_over_answers(
                    owner=self.owner, lease=self.lease, limit=limit
                )
        except (StoreError, TimeoutError) as exc:
            self._store_failed()
            log.error("answer_takeover_scan_failed", error_type=type(exc).__name__, error=str(exc))
            return
        self._store_answered()
        for answer in taken:
            if answer.claim.key in self.held:
                self._renewed_at[answer.claim.key] = started
                continue  # ours all along (a renewal came late): it is still being answered
            self.adopt(answer, started)
            on_takeover(answer)


def _now() -> float:
    return asyncio.get_running_loop().time()
