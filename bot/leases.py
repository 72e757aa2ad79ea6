"""Leases on answers: each Slack message answered by one replica, and finished if it dies.

The replica that claims a message (store `claim_answer`, keyed by team + channel + ts) holds a
lease on its answer, renewed every `renew_every` seconds while it works on it (running, waiting
in line or for budget, finishing). Every replica scans every `scan_every` seconds for answers
whose lease expired (their replica died) or was released (their replica stopped) and takes them
over: the `Answerer` runs the question again in the thread's Powabase session and finishes the
same Slack message. With the defaults (lease 10 s, scan every 2.5 s) a dead replica's answers
are taken over within about 13 s.

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
    ) -> None:
        self.store = store
        self.lease = lease
        self.owner = owner or replica_id()
        self.renew_every = renew_every if renew_every is not None else lease / 3
        self.scan_every = scan_every if scan_every is not None else min(lease / 4, SCAN_EVERY_MAX)
        self.batch = batch
        self.held: set[AnswerKey] = set()  # answers this replica works on, lease kept alive
        self._unfinished: set[AnswerKey] = set()  # finished, but the store has not heard yet
        self._task: asyncio.Task[None] | None = None

    async def claim(self, claim: AnswerClaim) -> bool:
        """True when this replica answers `claim` (it holds the lease from now on); False for
        a message another delivery already claimed. StoreError when the store cannot tell."""
        ours = await self.store.claim_answer(claim, owner=self.owner, lease=self.lease)
        if ours:
            self.held.add(claim.key)
        return ours

    def adopt(self, answer: OpenAnswer) -> None:
        """An answer the scan took over is held (renewed) like one claimed here."""
        self.held.add(answer.claim.key)

    async def posted(self, key: AnswerKey, reply_ts: str, *, native: bool) -> None:
        """Remember the reply message, so that a replica taking over edits it (never a second
        message). Logged, not raised, when the store fails."""
        if key not in self.held:
            return
        try:
            async with asyncio.timeout(STORE_WRITE_TIMEOUT):
                await self.store.set_reply(key, owner=self.owner, reply_ts=reply_ts, native=native)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_reply_unrecorded", error_type=type(exc).__name__, error=str(exc))

    async def finished(self, key: AnswerKey) -> None:
        """The answer reached its final Slack state: done, never taken over. When the store
        cannot be told now, the lease is kept alive and the next tick tells it."""
        if key not in self.held:
            return  # released, lost to another replica, or claimed without the store
        if not await self._tell_finished(key):
            self._unfinished.add(key)

    async def _tell_finished(self, key: AnswerKey) -> bool:
        try:
            async with asyncio.timeout(STORE_WRITE_TIMEOUT):
                await self.store.finish_answer(key, owner=self.owner)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_finish_unrecorded", error_type=type(exc).__name__, error=str(exc))
            return False
        self.held.discard(key)
        self._unfinished.discard(key)
        return True

    async def release(self, keys: list[AnswerKey]) -> int:
        """Hand these answers to the other replicas now (this one is stopping)."""
        keys = [k for k in keys if k in self.held and k not in self._unfinished]
        if not keys:
            return 0
        for key in keys:
            self.held.discard(key)
        try:
            async with asyncio.timeout(STORE_WRITE_TIMEOUT):
                released = await self.store.release_answers(keys, owner=self.owner)
        except (StoreError, TimeoutError) as exc:
            log.error("answer_release_failed", error_type=type(exc).__name__, count=len(keys))
            return 0
        log.info("answers_released", count=released)
        return released

    async def release_all(self) -> int:
        """At the end of a stop: every answer still held goes to the other replicas."""
        return await self.release(sorted(self.held, key=lambda k: k.message_ts))

    def start(self, on_takeover: Callable[[OpenAnswer], None], room: Callable[[], int]) -> None:
        """Renew and scan in the background; `on_takeover` starts each answer taken over,
        `room()` says how many more this replica may take now."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(on_takeover, room), name="leases")

    async def stop(self) -> None:
        """Stop scanning (renewals stop too: release or finish what is held next)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(
        self, on_takeover: Callable[[OpenAnswer], None], room: Callable[[], int]
    ) -> None:
        loop = asyncio.get_running_loop()
        next_renew = next_scan = loop.time()
        while True:
            try:
                if loop.time() >= next_renew:
                    next_renew = loop.time() + self.renew_every
                    await self._renew()
                if loop.time() >= next_scan:
                    next_scan = loop.time() + self.scan_every
                    await self._scan(on_takeover, room())
            except Exception:  # a bug here must not end renewals and takeovers for good
                log.exception("answer_leases_tick_crashed")
            await asyncio.sleep(max(0.0, min(next_renew, next_scan) - loop.time()))

    async def _renew(self) -> None:
        for key in list(self._unfinished):
            await self._tell_finished(key)
        keys = list(self.held)
        if not keys:
            return
        try:
            renewed = await self.store.renew_leases(keys, owner=self.owner, lease=self.lease)
        except StoreError as exc:
            log.error("answer_leases_unrenewed", error=str(exc), count=len(keys))
            return
        for key in set(keys) - renewed:
            if key in self.held:  # not finished meanwhile: another replica took it
                self.held.discard(key)
                self._unfinished.discard(key)
                log.warning("answer_lease_lost", channel=key.channel_id, ts=key.message_ts)

    async def _scan(self, on_takeover: Callable[[OpenAnswer], None], room: int) -> None:
        limit = min(self.batch, room)
        if limit <= 0:
            return
        try:
            taken = await self.store.take_over_answers(
                owner=self.owner, lease=self.lease, limit=limit
            )
        except StoreError as exc:
            log.error("answer_takeover_scan_failed", error=str(exc))
            return
        for answer in taken:
            if answer.claim.key in self.held:
                continue  # ours all along (a renewal came late): it is still being answered
            self.adopt(answer)
            on_takeover(answer)
