"""Answering one question: store lookup, the Powabase stream, and the Slack reply kept in step.

This is where a conversation must end with a reply whatever happens, so it is the one place with
a broad `except Exception`: the user sees a notice chosen by error class, never `str(exc)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError, StoreError, UpstreamError
from bot.limits import Admission, KeyedLocks
from bot.powabase.client import PowabaseClient
from bot.powabase.events import StartEvent
from bot.powabase.outcome import error_kind, operator_reason
from bot.render import render_trace
from bot.slack.publisher import Publisher, Stream
from bot.state import AnswerState, ErrorKind, Phase
from bot.store.base import SessionStore, ThreadKey, make_title, new_agent_session_id

log = structlog.get_logger(__name__)

ANSWERS = Counter(
    "powabot_answers",
    "Answers by how they ended: delivered (Slack accepted the final text), lost (it did not), "
    "skipped (the channel is gone or the bot token is refused: nothing asked upstream)",
    ["outcome"],
)
# A channel whose placeholder was refused as gone: for this long its answers post the
# placeholder before asking Powabase (no run for a reply that cannot land). Bounded in size.
UNREACHABLE_MEMORY = 600.0
UNREACHABLE_CHANNELS = 1000


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
    placeholder saying so), and one at a time per thread and user (a follow-up waits for the
    answer before it). The Powabase run starts together with the placeholder post, not after it.
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        powabase: PowabaseClient,
        publisher: Publisher,
        alerts: OperatorAlerts | None = None,
        max_in_flight: int = 200,
        stall_after: float = 8.0,
        run_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.powabase = powabase
        self.publisher = publisher
        self.alerts: OperatorAlerts = alerts or publisher.alerts  # one set per process
        self.admission = Admission(max_in_flight)
        self.threads = KeyedLocks()
        self.stall_after = stall_after
        self.run_timeout = run_timeout
        self.clock = clock
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.waiting: set[asyncio.Task[Any]] = set()  # for their thread's turn or a free slot
        self.draining = False
        self.finished = 0  # answers that reached their final Slack state (tests wait on it)
        self._unreachable: dict[str, float] = {}  # channel → when a placeholder found it gone

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
        try:
            try:
                first = await self.store.claim_event(q.event_id)
            except StoreError as exc:  # answering twice beats not answering at all
                log.error("event_claim_failed", error=str(exc))
                first = True
            if not first:
                log.info("event_duplicate_ignored")
                return None
            return await self._answer(q)
        finally:
            structlog.contextvars.clear_contextvars()

    async def _answer(self, q: Question) -> AnswerState:
        state = AnswerState(question=q.text, started_at=self.clock())
        stream = self.publisher.open(
            q.team_id,
            q.channel_id,
            q.reply_thread_ts,
            user_id=q.user_id,
            channel_type=q.channel_type,
        )
        me = asyncio.current_task()
        if self.draining and (self.threads.busy(q.key) or not self.admission.available):
            state.fail(ErrorKind.SHUTDOWN, "stopping: not queued", self.clock())
            await self._deliver(q, state, stream, None)
            return state
        if me is not None:
            self.waiting.add(me)
        try:
            return await self._answer_in_turn(q, state, stream)
        finally:
            if me is not None:
                self.waiting.discard(me)

    async def _answer_in_turn(self, q: Question, state: AnswerState, stream: Stream) -> AnswerState:
        me = asyncio.current_task()
        placing: asyncio.Task[SlackDeliveryError | None] | None = None
        running: asyncio.Task[None] | None = None
        cancelled = False
        async with contextlib.AsyncExitStack() as turn:
            try:
                await turn.enter_async_context(self.threads.hold(q.key))
                admitted = self.admission.try_enter()
                if admitted:
                    turn.callback(self.admission.leave)
                    self.waiting.discard(me)
                else:
                    state.queued = True
                    log.info(
                        "answer_queued",
                        queued=self.admission.queued + 1,
                        running=self.admission.active,
                    )
                placing = asyncio.create_task(self._place(state, stream))
                if admitted and self._may_run_early(q):
                    running = asyncio.create_task(self._run_guarded(q, state, stream))
                skip = await asyncio.shield(placing)
                if skip is not None:
                    if running is not None:
                        running.cancel()
                        await asyncio.wait({running})
                    self._skipped(q, skip)
                    return state
                if not admitted:
                    await self.admission.enter()
                    turn.callback(self.admission.leave)
                    self.waiting.discard(me)
                    state.queued = False
                    stream.update()
                if running is None:
                    running = asyncio.create_task(self._run_guarded(q, state, stream))
                await running
            except asyncio.CancelledError:
                cancelled = True
                state.fail(ErrorKind.SHUTDOWN, "cancelled", self.clock())
            finally:
                if running is not None and not running.done():
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait({running})
            # Still this thread's turn: the next follow-up starts after this reply's final edit.
            cancelled = await self._deliver(q, state, stream, placing) or cancelled
        if cancelled:
            raise asyncio.CancelledError
        return state

    async def _deliver(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        placing: asyncio.Task[SlackDeliveryError | None] | None,
    ) -> bool:
        """Finish the reply; True when we were cancelled meanwhile (the caller re-raises).

        A shutdown cancelling us while the reply is being finished must not cut it short: the
        final edit, the trace and the store record still happen (drain bounds the wait).
        """
        finishing = asyncio.ensure_future(self._finish(q, state, stream, placing))
        try:
            await asyncio.shield(finishing)
        except asyncio.CancelledError:
            await finishing
            return True
        return False

    def _may_run_early(self, q: Question) -> bool:
        """Start Powabase before the placeholder is up, unless this reply is likely to go
        nowhere: a bad bot token (operator alert open), or a channel that lately refused us."""
        if self.alerts.blocked("slack") is not None:
            return False
        refused_at = self._unreachable.get(q.channel_id)
        return refused_at is None or self.clock() - refused_at > UNREACHABLE_MEMORY

    async def _place(self, state: AnswerState, stream: Stream) -> SlackDeliveryError | None:
        """Post the placeholder; the Slack refusal that makes answering pointless, else None.

        Any other failure is logged and the answer goes on: `finish()` posts the result.
        """
        try:
            await stream.start(state)
        except SlackDeliveryError as exc:
            if exc.channel_gone or exc.auth_failed:
                return exc
            log.error("placeholder_failed", error_type=type(exc).__name__, error=exc.error)
        except Exception as exc:
            log.error("placeholder_failed", error_type=type(exc).__name__, error=str(exc))
        return None

    def _skipped(self, q: Question, exc: SlackDeliveryError) -> None:
        """No reply can reach this thread: nothing was (or will be) asked upstream."""
        if exc.channel_gone:
            self._unreachable.pop(q.channel_id, None)  # re-inserted: newest last
            self._unreachable[q.channel_id] = self.clock()
            while len(self._unreachable) > UNREACHABLE_CHANNELS:
                del self._unreachable[next(iter(self._unreachable))]
            log.warning("answer_skipped_channel_unreachable", method=exc.method, error=exc.error)
        else:  # the publisher raised the operator alert
            log.warning("answer_skipped_slack_auth_failed", method=exc.method, error=exc.error)
        ANSWERS.labels(outcome="skipped").inc()
        self.finished += 1

    async def _run_guarded(self, q: Question, state: AnswerState, stream: Stream) -> None:
        """The Powabase side of one answer: every failure ends in `state` (only a cancel
        raises); a refused key or id raises the operator alert, a completed run clears it."""
        log.info("answer_started")
        last_event = [self.clock()]
        watchdog = asyncio.create_task(self._watch_for_stalls(state, stream, last_event))
        try:
            if not q.text.strip():  # a file or an image alone: nothing to ask Powabase
                state.fail(ErrorKind.NO_QUESTION, "message without text", self.clock())
            else:
                async with asyncio.timeout(self.run_timeout):
                    await self._run(q, state, stream, last_event)
        except UpstreamError as exc:
            log.warning("upstream_failed", error_type=type(exc).__name__, error=str(exc))
            state.fail(_error_kind(exc), str(exc), self.clock())
            reason = operator_reason(exc)
            if reason is not None:
                self.alerts.alert("powabase", reason, detail=str(exc))
        except TimeoutError:
            log.warning("answer_run_timeout", run_timeout=self.run_timeout)
            state.fail(
                ErrorKind.TIMEOUT, f"no complete answer after {self.run_timeout:g}s", self.clock()
            )
        except Exception as exc:
            log.exception("answer_crashed")
            state.fail(_error_kind(exc), type(exc).__name__, self.clock())
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if state.phase is Phase.DONE:
            self.alerts.clear("powabase")
        stream.update()

    async def _run(
        self,
        q: Question,
        state: AnswerState,
        stream: Stream,
        last_event: list[float],
    ) -> None:
        agent_session_id = await self._session_for(q)
        events = self.powabase.stream_run(q.text, agent_session_id)
        async with contextlib.aclosing(events):
            async for event in events:
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
        self, state: AnswerState, stream: Stream, last_event: list[float]
    ) -> None:
        while not state.finished:
            await asyncio.sleep(min(1.0, self.stall_after / 4))
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
        lost: SlackDeliveryError | None = None
        try:
            await stream.finish()  # returns only once Slack accepted the final text
        except SlackDeliveryError as exc:
            lost = exc
        except Exception as exc:
            log.exception("answer_delivery_crashed")
            lost = SlackDeliveryError("finish", f"unexpected: {type(exc).__name__}")
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
        try:
            await self.store.record_run(
                q.key,
                run_id=state.run_id,
                status=state.phase.value,
                trace=trace_record(state),
            )
        except StoreError as exc:
            log.error("store_record_failed", error=str(exc))
        self.finished += 1
