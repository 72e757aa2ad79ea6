"""Answering one question: store lookup, the Powabase stream, and the Slack reply kept in step.

This is where a conversation must end with a reply whatever happens, so it is the one place with
a broad `except Exception`: the user sees a notice chosen by error class, never `str(exc)`.

Each Slack message is answered once across replicas: the replica whose claim wins holds a lease
on the answer (`bot.leases`) and records the reply message as soon as it is posted. An answer
taken over from a replica that died is run again in the thread's Powabase session and finishes
that same message (`take_over`); after `MAX_ATTEMPTS` runs it ends with a notice instead. A
replica stopping with a shared store hands the answers it could not finish to the others (no
restart notice: another replica finishes the message); with SQLite they get the notice. An
answer whose lease is lost (another replica took it over, or this one could not renew it) stops
at once and writes nothing more; a delivered answer is marked finished before anything else, so
it is never released nor run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError, StoreError, UpstreamError
from bot.leases import Leases
from bot.limits import Admission, KeyedLocks
from bot.metrics import ANSWERS, ANSWERS_IN_FLIGHT, LEASE_TAKEOVERS, UPSTREAM_ERRORS
from bot.powabase.client import PowabaseClient
from bot.powabase.events import StartEvent
from bot.powabase.outcome import error_kind, operator_reason
from bot.powabase.sources import Source, searched_knowledge_bases, sources_from_run
from bot.render import render_trace
from bot.render.labels import tokens
from bot.slack.assistant import Assistant
from bot.slack.calls import SLACK_TOKEN
from bot.slack.native import STOP_BURST, STOPS_PER_SECOND, NativeAnswerStream
from bot.slack.publisher import Publisher, Stream
from bot.slack.sessions import AgentSessions
from bot.state import AnswerState, ErrorKind, Phase
from bot.store.base import (
    QUESTION_MAX,
    AnswerClaim,
    AnswerKey,
    AnswerRecord,
    OpenAnswer,
    SessionStore,
    ThreadKey,
    make_title,
    new_agent_session_id,
)

log = structlog.get_logger(__name__)

# How long the Powabase run waits for the placeholder's outcome before starting anyway: long
# enough for Slack to refuse a gone channel or a bad token (then nothing is asked upstream),
# short enough that a placeholder queued behind the per-channel post budget (1/s) or a slow
# Slack does not hold the answer back. A run started meanwhile is cancelled if Slack refuses.
PLACEHOLDER_HEAD_START = 0.3  # seconds
# A channel whose placeholder was refused as gone: for this long its answers post the
# placeholder before asking Powabase (no run for a reply that cannot land). Bounded in size.
UNREACHABLE_MEMORY = 600.0
UNREACHABLE_CHANNELS = 1000
# Runs of one question at most (the first and two takeovers): a question whose replicas keep
# dying (a poison message, an out-of-memory answer) then ends with a notice, not a loop.
MAX_ATTEMPTS = 3
# Sources (read from the run detail after `complete`): a native stream still open waits this
# long for them before it stops (its text is on screen already), and shows them at its end;
# otherwise they head the trace message posted under the answer (within `SOURCES_TIMEOUT`;
# no chat.update is spent on them).
SOURCES_WAIT = 1.5  # seconds
SOURCES_TIMEOUT = 5.0  # seconds


@dataclass
class Running:
    """An answer in progress that its user may stop."""

    user_id: str
    state: AnswerState
    stream: Stream
    task: asyncio.Task[None] | None = None  # the Powabase run, once it started


@dataclass(frozen=True)
class Question:
    """A Slack message we decided to answer, read out of the raw event at the edge."""

    event_id: str
    team_id: str
    channel_id: str
    user_id: str
    text: str
    ts: str
    thread_ts: str | None = None
    channel_type: str | None = None

    @property
    def reply_thread_ts(self) -> str:
        """Answers always go in a thread: the message's own thread, or a new one under it."""
        return self.thread_ts or self.ts

    @property
    def key(self) -> ThreadKey:
        return ThreadKey(self.team_id, self.channel_id, self.reply_thread_ts, self.user_id)

    @property
    def answer_key(self) -> AnswerKey:
        """The Slack message itself: one answer however many events carry it."""
        return AnswerKey(self.team_id, self.channel_id, self.ts)

    def claim(self) -> AnswerClaim:
        """What the store keeps so that another replica can run this question again."""
        return AnswerClaim(
            self.answer_key,
            self.event_id,
            self.user_id,
            self.text[:QUESTION_MAX],
            thread_ts=self.thread_ts,
            channel_type=self.channel_type,
        )

    @classmethod
    def taken_over(cls, answer: OpenAnswer) -> Question:
        """The question of an answer taken over from another replica."""
        c = answer.claim
        return cls(
            event_id=c.event_id,
            team_id=c.key.team_id,
            channel_id=c.key.channel_id,
            user_id=c.user_id,
            text=c.question,
            ts=c.key.message_ts,
            thread_ts=c.thread_ts,
            channel_type=c.channel_type,
        )


def _error_kind(exc: BaseException) -> ErrorKind:
    return error_kind(exc)  # by cause: see bot/powabase/outcome.py


def trace_record(state: AnswerState) -> dict[str, Any]:
    """The delegation trace as plain data, for the store."""
    return {
        "run_id": state.run_id,
        "steps": state.steps,
        "usage": state.usage,
        "duration_s": state.duration_s,
        "error": state.error.kind.value if state.error else None,
        "delegations": [
            {
                "agent": d.agent,
                "task": d.task,
                "status": d.status,
                "duration_s": d.duration_s,
                "usage": d.usage,
                "tool_calls": [
                    {"tool": t.tool_name, "query": t.query, "duration_ms": t.duration_ms}
                    for t in d.tool_calls
                ],
            }
            for d in state.delegations
        ],
    }


class Answerer:
    """Answers questions; holds no per-conversation state between questions (the store does).

    Limits: at most `max_in_flight` answers run at once (the rest wait in line, FIFO, their
    placeholder saying so); at most `max_queued` wait (past that the user is told at once that
    the bot is busy); and one at a time per thread and user (a follow-up waits for the answer
    before it, its placeholder saying so at once). The session lookup starts together with the
    placeholder post, and the Powabase run at most `PLACEHOLDER_HEAD_START` after it.
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        powabase: PowabaseClient,
        publisher: Publisher,
        alerts: OperatorAlerts | None = None,
        leases: Leases | None = None,
        max_in_flight: int = 200,
        max_queued: int = 1000,
        stall_after: float = 8.0,
        run_timeout: float = 300.0,
        assistant: Assistant | None = None,
        token_for: Callable[[str], Awaitable[str | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.powabase = powabase
        self.publisher = publisher
        self.alerts: OperatorAlerts = alerts or publisher.alerts  # one set per process
        self.leases = leases or Leases(store)
        self.admission = Admission(max_in_flight)
        self.max_queued = max_queued
        self.threads = KeyedLocks()
        self.stall_after = stall_after
        self.run_timeout = run_timeout
        self.clock = clock
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.waiting: set[asyncio.Task[Any]] = set()  # for their thread's turn or a free slot
        self.draining = False
        self.finished = 0  # answers that reached their final Slack state (tests wait on it)
        self._unreachable: dict[str, float] = {}  # channel → when a placeholder found it gone
        self._delivered_unleased: set[AnswerKey] = set()  # lease lost as its final edit went
        self.sessions = AgentSessions(publisher.caller, publisher.budgets)
        self.assistant = assistant  # thread titles and viewed channels (the DM surface)
        # OAuth install: a workspace's bot token by team id (an answer taken over has no
        # request to carry it); None in single-workspace token mode.
        self.token_for = token_for
        self.extras: set[asyncio.Future[None]] = set()  # best-effort writes in flight
        # (team, channel, thread) → answers running there, for Stop
        self.running: dict[tuple[str, str, str], list[Running]] = {}

    async def stop(
        self, team_id: str, channel_id: str, thread_ts: str | None, user_id: str
    ) -> bool:
        """The user asked to stop: their answers in progress in that thread (or, with
        `thread_ts` None, anywhere in that DM channel) end with what arrived plus "Stopped.",
        and their Powabase streams are closed (Powabase cancels a run whose client left).
        Someone else's answer, or one already finished, is left alone: False then."""
        stopped = 0
        for (team, channel, thread), answers in self.running.items():
            if team != team_id or channel != channel_id:
                continue
            if thread_ts is not None and thread != thread_ts:
                continue
            for r in answers:
                if r.user_id != user_id or r.state.finished:
                    continue
                r.state.fail(ErrorKind.STOPPED, "stopped by the user", self.clock())
                if r.task is not None and not r.task.done():
                    r.task.cancel()
                r.stream.update()
                stopped += 1
        if stopped:
            log.info("answer_stopped_by_user", channel=channel_id, answers=stopped)
        return stopped > 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task as work in flight (shutdown waits for it); re-entrant."""
        task = asyncio.current_task()
        if task is None or task in self.in_flight:
            yield
            return
        self.in_flight.add(task)
        try:
            yield
        finally:
            self.in_flight.discard(task)

    def release_waiting(self) -> int:
        """Shutdown begins: answers still waiting for their turn get the restart notice now
        (they would not start before the grace ends), and no new answer waits in line."""
        self.draining = True
        waiting = [t for t in self.waiting if not t.done()]
        for task in waiting:
            task.cancel()
        return len(waiting)

    async def answer(self, q: Question) -> AnswerState | None:
        """Answer `q` in its thread unless this Slack event was already claimed."""
        structlog.contextvars.bind_contextvars(
            team=q.team_id, channel=q.channel_id, thread_ts=q.reply_thread_ts, event_id=q.event_id
        )
        with self.track():
            return await self._answer_once(q)

    async def _answer_once(self, q: Question) -> AnswerState | None:
        """Claim the event id (cheap: an exact redelivery stops here, and replicas of the
        previous release, which claim only that, stay in step during a rolling deploy), then
        the message itself (the `message` and `app_mention` of one message, or a retry in a
        new envelope, are one answer): the winner answers and holds its lease."""
        try:
            try:
                first = await self.store.claim_event(q.event_id)
            except StoreError as exc:  # answering twice beats not answering at all
                log.error("event_claim_failed", error=str(exc))
                first = True
            if not first:
                log.info("event_duplicate_ignored")
                return None
            # A store failure counts as ours (answering twice beats not answering at all).
            if not await self.leases.claim(q.claim()):
                log.info("answer_duplicate_ignored", ts=q.ts)
                return None
            return await self._answer(q, q.answer_key)
        finally:
            structlog.contextvars.clear_contextvars()

    def take_over(self, answer: OpenAnswer) -> None:
        """Finish an answer whose replica died or stopped (the lease scan found it): in the
        background, tracked like any answer in flight."""
        task = asyncio.create_task(self._resume(answer), name=f"takeover-{answer.claim.key}")
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    def room(self) -> int:
        """How many answers taken over this replica may start now (none while stopping)."""
        if self.draining:
            return 0
        return max(0, self.admission.limit - self.admission.active - self.admission.queued)

    async def _resume(self, answer: OpenAnswer) -> AnswerState | None:
        q = Question.taken_over(answer)
        structlog.contextvars.bind_contextvars(
            team=q.team_id, channel=q.channel_id, thread_ts=q.reply_thread_ts, event_id=q.event_id
        )
        LEASE_TAKEOVERS.inc()
        log.info(
            "answer_taken_over",
            ts=q.ts,
            attempts=answer.attempts,
            reply_ts=answer.reply_ts,
            native=answer.reply_native,
        )
        try:
            if self.token_for is not None:
                try:
                    token = await self.token_for(q.team_id)
                except Exception as exc:  # the store failed: another scan retries it
                    log.warning("takeover_token_unavailable", error_type=type(exc).__name__)
                    await self.leases.release([q.answer_key])
                    return None
                if token is None:  # uninstalled since: nobody can write there any more
                    log.warning("takeover_workspace_not_installed")
                    await self.leases.finished(q.answer_key)
                    return None
                SLACK_TOKEN.set(token)  # this task (and those it starts) writes as that bot
            return await self._answer(q, q.answer_key, answer)
        finally:
            structlog.contextvars.clear_contextvars()

    async def _adopt(self, q: Question, answer: OpenAnswer, state: AnswerState) -> Stream:
        """The stream finishing the reply message the first replica posted: edited from now
        on (its native stream stopped first, a refusal ignored); a new one when none was
        recorded (that replica died before posting)."""
        if answer.reply_ts is None:
            return self.publisher.open(
                q.team_id,
                q.channel_id,
                q.reply_thread_ts,
                user_id=q.user_id,
                channel_type=q.channel_type,
            )
        if answer.reply_native:
            stops = self.publisher.budgets.bucket(f"stop:{q.team_id}", STOPS_PER_SECOND, STOP_BURST)
            try:  # waits for the stop budget, and past 429s / 5xx like any final write
                await self.publisher.caller.call_reliably(
                    "chat.stopStream", stops, channel=q.channel_id, ts=answer.reply_ts
                )
            except SlackDeliveryError as exc:  # e.g. message_not_in_streaming_state
                log.info("takeover_stream_not_stopped", error=exc.error)
        return self.publisher.adopt(
            q.team_id, q.channel_id, q.reply_thread_ts, ts=answer.reply_ts, state=state
        )

    async def _answer(
        self, q: Question, lease: AnswerKey | None, taken: OpenAnswer | None = None
    ) -> AnswerState | None:
        """Answer under `lease`. Should the lease be lost meanwhile (another replica took the
        answer over, or this one could not renew it), the answer stops at once and writes
        nothing more: the other replica finishes the same message."""
        me = asyncio.current_task()
        on_lost: Callable[[], None] | None = None
        if me is not None:
            task = me

            def on_lost() -> None:
                task.cancel()

        if lease is not None and on_lost is not None:
            self.leases.watch(lease, on_lost)
        with ANSWERS_IN_FLIGHT.track_inprogress():
            try:
                return await self._answer_leased(q, lease, taken)
            except asyncio.CancelledError:
                if lease is not None and self.leases.lost(lease):
                    if me is not None:
                        me.uncancel()  # our own cancel: this task ends normally
                    if lease in self._delivered_unleased:  # too late to stop: it was done
                        self._delivered_unleased.discard(lease)
                        log.warning("answer_delivered_as_lease_lost", ts=q.ts)
                    else:
                        log.warning("answer_stopped_lease_lost", ts=q.ts)
                        ANSWERS.labels(outcome="lease_lost").inc()
                    return None
                if lease is not None and self.draining and self.store.shared:
                    # Only answers not delivered yet: a delivered one was finished already.
                    await self.leases.release([lease])
                raise
            finally:
                if lease is not None:
                    lost = self.leases.lost(lease)  # then only a delivery finished it
                    if on_lost is not None:
                        self.leases.forget(lease, on_lost)
                    if not lost:
                        await self.leases.finished(lease)  # a no-op once finished or released

    async def _answer_leased(
        self, q: Question, lease: AnswerKey | None, taken: OpenAnswer | None
    ) -> AnswerState:
        state = AnswerState(question=q.text, started_at=self.clock())
        if taken is None:
            stream = self.publisher.open(
                q.team_id,
                q.channel_id,
                q.reply_thread_ts,
                user_id=q.user_id,
                channel_type=q.channel_type,
            )
        else:
            stream = await self._adopt(q, taken, state)
            if taken.attempts > MAX_ATTEMPTS:
                log.warning("answer_given_up", attempts=taken.attempts - 1)
                state.fail(ErrorKind.INTERRUPTED, "its replicas kept stopping", self.clock())
        adopted = taken is not None and taken.reply_ts is not None
        if lease is not None and not adopted:
            stream.on_posted = self._on_posted(lease)
        me = asyncio.current_task()
        would_wait = self.threads.busy(q.key) or not self.admission.available
        if would_wait and not state.finished:
            if self.draining:
                if lease is not None and self.store.shared:
                    await self._hand_over(stream, None, lease)
                    return state
                state.fail(ErrorKind.SHUTDOWN, "stopping: not queued", self.clock())
            elif len(self.waiting) >= self.max_queued:
                log.warning(
                    "answer_refused_busy", waiting=len(self.waiting), max_queued=self.max_queued
                )
                state.fail(ErrorKind.BUSY, "too many questions waiting", self.clock())
        if state.finished:  # the notice is the placeholder: one post
            placing = asyncio.create_task(self._place(state, stream, lease, adopted=adopted))
            if await self._deliver(q, state, stream, placing, lease):
                raise asyncio.CancelledError
            return state
        if would_wait and me is not None:
            self.waiting.add(me)  # discarded once it runs
        try:
            return await self._answer_in_turn(q, state, stream, lease, adopted=adopted)
        finally:
            if me is not None:
                self.waiting.discard(me)

    async def _answer_in_turn(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        lease: AnswerKey | None,
        *,
        adopted: bool,
    ) -> AnswerState:
        """Wait for this thread's turn and a free slot, the placeholder saying so meanwhile;
        then run the question, unless Slack refused the placeholder as gone or unauthorised.

        Cancelled at shutdown with a shared store, the answer is handed over instead of ending
        with the restart notice: nothing more is written, and its lease is released so that
        another replica takes it over at once and finishes the same message."""
        placing: asyncio.Task[SlackDeliveryError | None] | None = None
        session: asyncio.Task[str] | None = None
        running: asyncio.Task[None] | None = None
        cancelled = False
        loop = asyncio.get_running_loop()
        placed_at = loop.time()
        me = Running(q.user_id, state, stream)
        where = (q.team_id, q.channel_id, q.reply_thread_ts)
        self.running.setdefault(where, []).append(me)
        async with contextlib.AsyncExitStack() as turn:
            turn.callback(self._not_running, where, me)
            try:
                state.after_previous = self.threads.busy(q.key)
                if state.after_previous:  # acknowledged at once, answered after the previous
                    log.info("answer_waits_for_previous")
                    placing = asyncio.create_task(
                        self._place(state, stream, lease, adopted=adopted)
                    )
                    placed_at = loop.time()
                await turn.enter_async_context(self.threads.hold(q.key))
                # This thread's turn: the place in line is taken now (FIFO), before any await.
                slot = self.admission.join()
                turn.callback(self.admission.release, slot)
                state.queued = not slot.done()
                if state.queued:
                    log.info(
                        "answer_queued", queued=self.admission.queued, running=self.admission.active
                    )
                if placing is None:
                    placing = asyncio.create_task(
                        self._place(state, stream, lease, adopted=adopted)
                    )
                    placed_at = loop.time()
                elif state.after_previous:
                    state.after_previous = False
                    stream.update()  # now "in line" or "looking into it"
                if q.text.strip():
                    session = asyncio.create_task(self._session_for(q))
                    turn.push_async_callback(_settled, session)
                skip = await self._unless_refused(slot, placing)
                if skip is None:
                    self._admitted(state, stream)
                    skip = await self._head_start(q, placing, placed_at)
                if skip is not None:
                    self._skipped(q, skip)
                    return state
                running = asyncio.create_task(self._run_guarded(q, state, stream, session))
                me.task = running
                if not placing.done():  # the run goes on; it ends if Slack refuses the reply
                    await asyncio.wait({placing, running}, return_when=asyncio.FIRST_COMPLETED)
                    skip = _refusal(placing)
                    if skip is not None:
                        await _settled(running)
                        self._skipped(q, skip)
                        return state
                await running
            except asyncio.CancelledError:
                cancelled = True
                state.fail(ErrorKind.SHUTDOWN, "cancelled", self.clock())
            finally:
                if running is not None:
                    await _settled(running)
            if cancelled and lease is not None and self.leases.lost(lease):
                await self._stand_down(stream, placing)
                raise asyncio.CancelledError
            if cancelled and lease is not None and self.draining and self.store.shared:
                await self._hand_over(stream, placing, lease)
                raise asyncio.CancelledError
            # Still this thread's turn: the next follow-up starts after this reply's final edit.
            cancelled = await self._deliver(q, state, stream, placing, lease) or cancelled
        if cancelled:
            raise asyncio.CancelledError
        return state

    def _not_running(self, where: tuple[str, str, str], me: Running) -> None:
        answers = self.running.get(where, [])
        if me in answers:
            answers.remove(me)
        if not answers:
            self.running.pop(where, None)

    async def _unless_refused(
        self,
        slot: asyncio.Future[None],
        placing: asyncio.Task[SlackDeliveryError | None],
    ) -> SlackDeliveryError | None:
        """Wait for `slot`; stop early with Slack's refusal if the placeholder is refused."""
        if not slot.done() and not placing.done():
            either: set[asyncio.Future[Any]] = {slot, placing}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        skip = _refusal(placing)
        if skip is None:
            await slot
        return skip

    def _admitted(self, state: AnswerState, stream: Stream) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.waiting.discard(task)
        if state.queued:
            state.queued = False
            stream.update()

    async def _head_start(
        self, q: Question, placing: asyncio.Task[SlackDeliveryError | None], placed_at: float
    ) -> SlackDeliveryError | None:
        """Give the placeholder up to `PLACEHOLDER_HEAD_START` after its post began (loop time
        `placed_at`) to be refused; all the time it needs when this reply is likely to go
        nowhere (a bad bot token, or a channel that lately refused us). Slack's refusal, or
        None: run now."""
        if not placing.done():
            if self._may_run_early(q):
                left = placed_at + PLACEHOLDER_HEAD_START - asyncio.get_running_loop().time()
                if left > 0:
                    await asyncio.wait({placing}, timeout=left)
            else:
                await asyncio.wait({placing})
        return _refusal(placing)

    async def _deliver(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        placing: asyncio.Task[SlackDeliveryError | None] | None,
        lease: AnswerKey | None,
    ) -> bool:
        """Finish the reply; True when we were cancelled meanwhile (the caller re-raises).

        A shutdown cancelling us while the reply is being finished must not cut it short: the
        final edit, the trace and the store record still happen (drain bounds the wait). Then
        the answer is finished for the store too, before anything else: a delivered answer is
        never released at shutdown nor run again by another replica.
        """
        finishing = asyncio.ensure_future(self._finish(q, state, stream, placing))
        cancelled = False
        try:
            await asyncio.shield(finishing)
        except asyncio.CancelledError:
            cancelled = True
            await finishing
        if lease is not None:
            if self.leases.lost(lease):
                self._delivered_unleased.add(lease)
            await self.leases.finished(lease)
        return cancelled

    def _may_run_early(self, q: Question) -> bool:
        """Start Powabase before the placeholder is up (after the head start), unless this reply
        is likely to go nowhere: a bad bot token (operator alert open), or a channel that lately
        refused us."""
        if self.alerts.blocked("slack") is not None:
            return False
        refused_at = self._unreachable.get(q.channel_id)
        return refused_at is None or self.clock() - refused_at > UNREACHABLE_MEMORY

    async def _hand_over(
        self,
        stream: Stream,
        placing: asyncio.Task[SlackDeliveryError | None] | None,
        lease: AnswerKey,
    ) -> None:
        """Shutdown with a shared store: stop writing (no final, no notice) and release the
        lease; another replica finishes the same message. A placeholder still being posted
        is waited for first: its ts must be recorded before another replica looks."""
        if placing is not None:
            await asyncio.wait({placing})
        stream.abandon()
        await self.leases.release([lease])
        log.info("answer_handed_over")
        ANSWERS.labels(outcome="handed_over").inc()

    async def _stand_down(
        self, stream: Stream, placing: asyncio.Task[SlackDeliveryError | None] | None
    ) -> None:
        """The lease was lost: another replica has this answer (or may take it any moment).
        Write nothing more: no final edit, no notice, no trace; the placeholder post, if
        still under way, is given up."""
        if placing is not None:
            await _settled(placing)
        stream.abandon()

    def _on_posted(self, lease: AnswerKey) -> Callable[[str, bool], Awaitable[None]]:
        """What a stream calls once the reply's first message exists (its first words, or a
        native stream): recorded for the lease, so a takeover finishes that message."""

        async def posted(ts: str, native: bool) -> None:
            await self.leases.posted(lease, ts, native=native)

        return posted

    async def _place(
        self,
        state: AnswerState,
        stream: Stream,
        lease: AnswerKey | None = None,
        *,
        adopted: bool = False,
    ) -> SlackDeliveryError | None:
        """Post the placeholder and record it for the lease; the Slack refusal that makes
        answering pointless, else None. An adopted message (taken over) is already there.

        Any other failure is logged and the answer goes on: `finish()` posts the result.
        """
        if adopted:
            return None
        try:
            ts = await stream.start(state)  # None: only a status so far (see `_on_posted`)
            if lease is not None and ts is not None:
                await self.leases.posted(lease, ts, native=False)
        except SlackDeliveryError as exc:
            if exc.channel_gone or exc.auth_failed:
                return exc
            log.error("placeholder_failed", error_type=type(exc).__name__, error=exc.error)
        except Exception as exc:
            log.error("placeholder_failed", error_type=type(exc).__name__, error=str(exc))
        return None

    def _remember_unreachable(self, channel_id: str) -> None:
        self._unreachable.pop(channel_id, None)  # re-inserted: newest last
        self._unreachable[channel_id] = self.clock()
        while len(self._unreachable) > UNREACHABLE_CHANNELS:
            del self._unreachable[next(iter(self._unreachable))]

    def _skipped(self, q: Question, exc: SlackDeliveryError) -> None:
        """No reply can reach this thread: nothing more is asked upstream (a run begun while
        the placeholder was pending has been cancelled)."""
        if exc.channel_gone:
            self._remember_unreachable(q.channel_id)
            log.warning("answer_skipped_channel_unreachable", method=exc.method, error=exc.error)
        else:  # the publisher raised the operator alert
            log.warning("answer_skipped_slack_auth_failed", method=exc.method, error=exc.error)
        ANSWERS.labels(outcome="skipped").inc()
        self.finished += 1

    async def _run_guarded(
        self, q: Question, state: AnswerState, stream: Stream, session: asyncio.Task[str] | None
    ) -> None:
        """The Powabase side of one answer: every failure ends in `state` (only a cancel
        raises); a refused key or id raises the operator alert, a completed run clears it.
        The channel going away mid-answer ends the run (the stream is closed: Powabase cancels
        it) and nothing more is written to Slack."""
        if state.finished:  # stopped while it waited for its turn
            return
        log.info("answer_started")
        last_event = [self.clock()]
        processing = asyncio.create_task(
            self.sessions.set(
                q.team_id, q.channel_id, q.reply_thread_ts, "processing", user_id=q.user_id
            )
        )
        try:
            if session is None:  # a file or an image alone: nothing to ask Powabase
                state.fail(ErrorKind.NO_QUESTION, "message without text", self.clock())
            else:
                async with asyncio.timeout(self.run_timeout) as limit:
                    watchdog = asyncio.create_task(
                        self._watch_for_stalls(state, stream, last_event, limit)
                    )
                    try:
                        await self._run(q, state, stream, last_event, session)
                    finally:
                        await _settled(watchdog)
        except UpstreamError as exc:
            log.warning("upstream_failed", error_type=type(exc).__name__, error=str(exc))
            state.fail(_error_kind(exc), str(exc), self.clock())
            UPSTREAM_ERRORS.labels(kind=_error_kind(exc).value).inc()
            reason = operator_reason(exc)
            if reason is not None:
                self.alerts.alert("powabase", reason, detail=str(exc))
        except TimeoutError:
            if not stream.channel_gone:  # else the watchdog ended the run on purpose (below)
                log.warning("answer_run_timeout", run_timeout=self.run_timeout)
                UPSTREAM_ERRORS.labels(kind=ErrorKind.TIMEOUT.value).inc()
                state.fail(
                    ErrorKind.TIMEOUT,
                    f"no complete answer after {self.run_timeout:g}s",
                    self.clock(),
                )
        except asyncio.CancelledError:
            if not _stopped(state):
                raise
            log.info("answer_run_stopped", chars=len(state.text))
        except Exception as exc:
            log.exception("answer_crashed")
            state.fail(_error_kind(exc), type(exc).__name__, self.clock())
        finally:
            await asyncio.wait({processing})
        if state.finished:  # a stopped answer is finished too
            await self.sessions.set(
                q.team_id, q.channel_id, q.reply_thread_ts, "active", user_id=q.user_id
            )
        if stream.channel_gone:
            state.fail(ErrorKind.INTERRUPTED, "the channel went away mid-answer", self.clock())
            return
        if state.phase is Phase.DONE:
            self.alerts.clear("powabase")
        stream.update()

    async def _run(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        last_event: list[float],
        session: asyncio.Task[str],
    ) -> None:
        agent_session_id = await session
        events = self.powabase.stream_run(self._with_context(q), agent_session_id)
        async with contextlib.aclosing(events):  # leaving it closes the stream: run cancelled
            async for event in events:
                if stream.channel_gone:
                    return
                now = self.clock()
                last_event[0] = now
                state.apply(event, now)
                if isinstance(event, StartEvent):
                    structlog.contextvars.bind_contextvars(run_id=event.run_id)
                    if event.session_id and event.session_id != agent_session_id:
                        try:
                            await self.store.set_agent_session_id(q.key, event.session_id)
                        except StoreError as exc:
                            log.error("store_session_update_failed", error=str(exc))
                stream.update()

    def _background(self, step: Awaitable[None]) -> None:
        """Run a best-effort Slack write beside the answer (kept referenced until done)."""
        task = asyncio.ensure_future(step)
        self.extras.add(task)
        task.add_done_callback(self.extras.discard)

    def _with_context(self, q: Question) -> str:
        """The question, plus the channel the user is viewing when Slack said (the assistant
        thread's context): "which channel is this about" often is the question."""
        viewing = None
        if self.assistant is not None:
            viewing = self.assistant.contexts.viewing(q.channel_id, q.reply_thread_ts)
        if not viewing:
            return q.text
        log.info("question_context", viewing=viewing)
        return f"{q.text}\n\n(Asked in Slack while viewing the channel <#{viewing}>.)"

    async def _session_for(self, q: Question) -> str:
        """The thread's agent session id; a fresh one (not remembered) if the store is down.

        Answering without the thread's earlier context beats not answering at all.
        """
        try:
            session = await self.store.get_session(q.key)
            if session is None:
                session = await self.store.reserve_session(
                    q.key, new_agent_session_id(), make_title(q.text)
                )
                log.info("session_created", agent_session_id=session.agent_session_id)
                if self.assistant is not None and q.channel_type == "im":
                    title = self.assistant.set_title(
                        q.team_id, q.channel_id, q.reply_thread_ts, q.text
                    )
                    self._background(title)  # never holds the run back
            return session.agent_session_id
        except StoreError as exc:
            log.error("store_session_unavailable", error=str(exc))
            return new_agent_session_id()

    async def _post_trace(self, state: AnswerState, stream: Stream) -> None:
        """The collapsed trace; legacy attachments where Slack refuses the container block."""
        try:
            await stream.post_below(render_trace(state))
        except SlackDeliveryError as exc:
            if exc.error not in ("invalid_blocks", "invalid_blocks_format"):
                raise
            log.info("trace_container_refused", error=exc.error)
            await stream.post_below(render_trace(state, style="attachment"))

    async def _watch_for_stalls(
        self, state: AnswerState, stream: Stream, last_event: list[float], limit: asyncio.Timeout
    ) -> None:
        """Mark a silent run as stalled; end the run at once if the channel went away."""
        while not state.finished:
            await asyncio.sleep(min(1.0, self.stall_after / 4))
            if stream.channel_gone:
                limit.reschedule(asyncio.get_running_loop().time())  # ends the run now
                return
            if not state.stalled and self.clock() - last_event[0] >= self.stall_after:
                state.mark_stalled()
                stream.update()

    async def _finish(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        placing: asyncio.Task[SlackDeliveryError | None] | None,
    ) -> None:
        if state.run_id:  # bound in the run's own task; the lines below should carry it too
            structlog.contextvars.bind_contextvars(run_id=state.run_id)
        if placing is not None:
            skip = await placing  # the finish below must know whether a placeholder exists
            if skip is not None:
                self._skipped(q, skip)
                return
        if stream.channel_gone:  # the reply cannot land: no further Slack write
            with contextlib.suppress(SlackDeliveryError):
                await stream.finish()  # writes nothing now: only ends the stream's flusher
            self._remember_unreachable(q.channel_id)
            log.warning(
                "answer_abandoned_channel_unreachable",
                phase=state.phase.value,
                chars=len(state.text),
                slack_calls=stream.calls,
            )
            ANSWERS.labels(outcome="abandoned").inc()
            await self._record(q, state)
            self.finished += 1
            return
        sources = self._fetch_sources(state)
        if sources is not None and isinstance(stream, NativeAnswerStream) and stream.streaming:
            # The text is on screen already: the stream's stop may wait a moment for them.
            await asyncio.wait({sources}, timeout=SOURCES_WAIT)
            _take_sources(state, sources)
        lost: SlackDeliveryError | None = None
        try:
            await stream.finish()  # returns only once Slack accepted the final text
        except SlackDeliveryError as exc:
            lost = exc
        except Exception as exc:
            log.exception("answer_delivery_crashed")
            lost = SlackDeliveryError("finish", f"unexpected: {type(exc).__name__}")
        if sources is not None:
            await self._await_sources(state, sources, delivered=lost is None)
        if lost is None:
            await self._keep_answer(q, state, stream)
        if lost is None and stream.truncated:  # the note promises the full answer below
            try:
                await stream.attach_full_answer(state.text, "Full answer")
            except Exception:
                log.exception("full_answer_attach_crashed")
        if lost is None and state.phase is Phase.DONE and state.delegations:
            try:
                await self._post_trace(state, stream)
            except SlackDeliveryError as exc:
                log.warning("trace_undeliverable", method=exc.method, error=exc.error)
            except Exception:
                log.exception("trace_delivery_crashed")
        fields: dict[str, Any] = {
            "phase": state.phase.value,
            "error": state.error.kind.value if state.error else None,
            "slack_calls": stream.calls,
            "chars": len(state.text),
            "delegations": [d.agent for d in state.delegations],
        }
        if lost is None:
            log.info("answer_delivered", **fields)
            ANSWERS.labels(outcome="delivered").inc()
        else:
            log.error(
                "answer_lost",
                reason=f"{lost.method}: {lost.error}",
                method=lost.method,
                slack_error=lost.error,
                **fields,
            )
            ANSWERS.labels(outcome="lost").inc()
        await self._record(q, state)
        self.finished += 1

    def _fetch_sources(self, state: AnswerState) -> asyncio.Task[list[Source]] | None:
        """Read the documents a completed answer rests on (run detail), in the background."""
        if state.phase is not Phase.DONE or not state.run_id or not state.delegations:
            return None
        return asyncio.create_task(self._sources_of(state.run_id, state))

    async def _sources_of(self, run_id: str, state: AnswerState) -> list[Source]:
        detail: object = None  # unreadable: the knowledge bases searched are named instead
        try:
            detail = await self.powabase.run_detail(run_id, within=SOURCES_TIMEOUT)
        except UpstreamError as exc:
            log.info("sources_unavailable", error_type=type(exc).__name__, error=str(exc))
        searched = searched_knowledge_bases(state.delegations)
        found = sources_from_run(detail, searched_kbs=searched)
        log.info("sources_found", count=len(found))
        return found

    async def _await_sources(
        self, state: AnswerState, sources: asyncio.Task[list[Source]], *, delivered: bool
    ) -> None:
        """Wait (at most `SOURCES_TIMEOUT`) for the sources the trace shows right under the
        answer, unless the answer went undelivered or already has them (a native stream)."""
        if delivered and not state.sources:
            await asyncio.wait({sources}, timeout=SOURCES_TIMEOUT)
            _take_sources(state, sources)
        await _settled(sources)

    async def _keep_answer(self, q: Question, state: AnswerState, stream: Stream) -> None:
        """Keep the delivered answer for feedback, escalation and export (a store fault is
        logged: the buttons under it then say the conversation cannot be found)."""
        reply_ts = stream.reply_ts
        if reply_ts is None:
            return
        record = AnswerRecord(
            key=q.key,
            reply_ts=reply_ts,
            run_id=state.run_id,
            question=q.text[:QUESTION_MAX],
            answer=state.text[:QUESTION_MAX],
            status=_run_status(state),
            specialists=tuple(dict.fromkeys(d.agent for d in state.delegations)),
            sources=tuple(source_line(s) for s in state.sources),
            tokens=tokens(state.usage),
        )
        try:
            await self.store.record_answer(record)
        except StoreError as exc:
            log.error("store_answer_record_failed", error=str(exc))
        except Exception:  # never lets a delivered answer count as lost
            log.exception("store_answer_record_crashed")

    async def _record(self, q: Question, state: AnswerState) -> None:
        """The run and its trace, for the store (a store fault is logged, not raised)."""
        try:
            await self.store.record_run(
                q.key,
                run_id=state.run_id,
                status=_run_status(state),
                trace=trace_record(state),
            )
        except StoreError as exc:
            log.error("store_record_failed", error=str(exc))


def _take_sources(state: AnswerState, sources: asyncio.Task[list[Source]]) -> None:
    """Put the looked-up sources into `state` if the lookup is done (and did not fail)."""
    if sources.done() and not sources.cancelled() and sources.exception() is None:
        state.sources = sources.result()


def source_line(source: Source) -> str:
    """A source as one line of the answer record: "Title (knowledge base) <url>"."""
    line = source.title
    if source.knowledge_base:
        line += f" ({source.knowledge_base})"
    if source.url:
        line += f" <{source.url}>"
    return line


def _stopped(state: AnswerState) -> bool:
    """The user stopped this answer."""
    return state.error is not None and state.error.kind is ErrorKind.STOPPED


def _run_status(state: AnswerState) -> str:
    """How the run ended, for the store: done / failed / stopped."""
    return ErrorKind.STOPPED.value if _stopped(state) else state.phase.value


def _refusal(placing: asyncio.Task[SlackDeliveryError | None]) -> SlackDeliveryError | None:
    """Slack's refusal of the placeholder, once it is known; None while it is pending or when
    the placeholder landed (or failed in a way that does not stop the answer)."""
    return placing.result() if placing.done() else None


async def _settled(task: asyncio.Task[Any]) -> None:
    """Cancel `task` unless it is done, and wait for it to end (its outcome is not wanted)."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its outcome is not wanted any more
