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

from bot.errors import (
    SlackDeliveryError,
    StoreError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from bot.powabase.client import PowabaseClient
from bot.powabase.events import StartEvent
from bot.render import render_trace
from bot.slack.publisher import Publisher, Stream
from bot.state import AnswerState, ErrorKind, Phase
from bot.store.base import SessionStore, ThreadKey, make_title, new_agent_session_id

log = structlog.get_logger(__name__)


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
    match exc:
        case UpstreamConnectError():
            return ErrorKind.UNREACHABLE
        case UpstreamStatusError():
            return ErrorKind.REJECTED
        case UpstreamRunError():
            return ErrorKind.RUN_FAILED
        case UpstreamTimeoutError():
            return ErrorKind.TIMEOUT
        case UpstreamError():
            return ErrorKind.INTERRUPTED
        case _:
            return ErrorKind.INTERNAL


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
    """Answers questions; holds no per-conversation state between questions (the store does)."""

    def __init__(
        self,
        *,
        store: SessionStore,
        powabase: PowabaseClient,
        publisher: Publisher,
        stall_after: float = 8.0,
        run_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.powabase = powabase
        self.publisher = publisher
        self.stall_after = stall_after
        self.run_timeout = run_timeout
        self.clock = clock
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.finished = 0  # answers that reached their final Slack state (tests wait on it)

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
        last_event = [self.clock()]
        watchdog: asyncio.Task[None] | None = None
        cancelled = False
        try:
            try:
                await stream.start(state)
            except Exception as exc:  # no placeholder: answer anyway, finish() posts the result
                log.error("placeholder_failed", error_type=type(exc).__name__, error=str(exc))
            log.info("answer_started")
            watchdog = asyncio.create_task(self._watch_for_stalls(state, stream, last_event))
            if not q.text.strip():  # a file or an image alone: nothing to ask Powabase
                state.fail(ErrorKind.NO_QUESTION, "message without text", self.clock())
            else:
                async with asyncio.timeout(self.run_timeout):
                    await self._run(q, state, stream, last_event)
        except asyncio.CancelledError:
            cancelled = True
            state.fail(ErrorKind.SHUTDOWN, "cancelled", self.clock())
        except UpstreamError as exc:
            log.warning("upstream_failed", error_type=type(exc).__name__, error=str(exc))
            state.fail(_error_kind(exc), str(exc), self.clock())
        except TimeoutError:
            log.warning("answer_run_timeout", run_timeout=self.run_timeout)
            state.fail(
                ErrorKind.TIMEOUT, f"no complete answer after {self.run_timeout:g}s", self.clock()
            )
        except Exception as exc:
            log.exception("answer_crashed")
            state.fail(_error_kind(exc), type(exc).__name__, self.clock())
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
        # A shutdown cancelling us while the reply is being finished must not cut it short:
        # the final edit, the trace and the store record still happen (drain bounds the wait).
        finishing = asyncio.ensure_future(self._finish(q, state, stream))
        try:
            await asyncio.shield(finishing)
        except asyncio.CancelledError:
            cancelled = True
            await finishing
        if cancelled:
            raise asyncio.CancelledError
        return state

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

    async def _finish(self, q: Question, state: AnswerState, stream: Stream) -> None:
        try:
            await stream.finish()
            if state.phase is Phase.DONE and state.delegations:
                await self._post_trace(state, stream)
        except SlackDeliveryError as exc:
            log.error("answer_undeliverable", method=exc.method, error=exc.error)
        except Exception:
            log.exception("answer_delivery_crashed")
        log.info(
            "answer_finished",
            phase=state.phase.value,
            error=state.error.kind.value if state.error else None,
            slack_calls=stream.calls,
            chars=len(state.text),
            delegations=[d.agent for d in state.delegations],
        )
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
