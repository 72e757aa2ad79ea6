"""Slack's native chat streaming (chat.startStream / appendStream / stopStream) for one answer.

Used for DMs when POWABOT_NATIVE_STREAMING is on. What the coordinator is doing shows as task
cards (`task_update` chunks); the answer text is appended as Markdown, which Slack renders itself.
Appends do not spend the Tier-3 `chat.update` budget.

Slack limits each streaming method separately, per workspace: appendStream is Tier 4,
startStream and stopStream Tier 2. Each gets a bucket of its own (about 10 % under Slack's
figure, like the other budgets), so a burst of answers finishing together waits for stopStream
tokens, and a 429 on stopStream pauses stopStream only: everyone else's appends carry on.

Intermediate appends never wait in line: when the workspace append budget is empty, or Slack
answers 429 / `ratelimited`, the flusher sleeps until the next token (or for `Retry-After`), and
after a 5xx it backs off; the next append then carries everything that piled up meanwhile.
Anything Slack refuses outright (streaming not allowed here, the stream expired, a method
refused, ...) ends native streaming: the stream is stopped and the classic `AnswerStream` adopts
the same message and edits the whole answer into it, so nothing is lost and nothing shows twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError
from bot.render import render_answer, status_text
from bot.render.answer import NATIVE_MAX_CHARS, answer_markdown
from bot.render.safety import plain
from bot.retry import retry_delay
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import (
    BACKOFF,
    MAX_BACKOFF,
    Clock,
    FirstText,
    RateLimited,
    SlackCaller,
    Sleep,
    Transient,
    delivered,
    outlive_flusher,
    sleep_unless,
)
from bot.slack.files import ThreadExtras
from bot.state import AnswerState, Phase

log = structlog.get_logger(__name__)

# The stream is gone (or was never really open): stopping it again is pointless.
NOT_STREAMING = "message_not_in_streaming_state"
MAX_APPEND = 11_000  # markdown_text is capped at 12,000 characters per call
APPENDS_PER_SECOND = 90 / 60  # Tier 4 ("100+ per minute"), per workspace
APPEND_BURST = 16.0
STARTS_PER_SECOND = 18 / 60  # Tier 2 ("20+ per minute"), per workspace
START_BURST = 3.0
STOPS_PER_SECOND = 18 / 60  # Tier 2 ("20+ per minute"), per workspace
STOP_BURST = 3.0
MIN_WAIT = 0.05  # shortest pause after a refused intermediate append
HELD_WAIT = 5.0  # pause between looks while an operator alert holds intermediate writes


class ClassicStream(Protocol):
    """What native streaming needs of the classic stream it falls back to."""

    calls: int

    @property
    def channel_gone(self) -> bool: ...

    @property
    def truncated(self) -> bool: ...

    async def start(self, state: AnswerState) -> str: ...

    def update(self) -> None: ...

    async def finish(self) -> None: ...

    def abandon(self) -> None: ...


class StreamHost(Protocol):
    """What a native stream needs of the publisher that opened it (no import of it here)."""

    caller: SlackCaller
    budgets: BudgetBook
    alerts: OperatorAlerts
    min_interval: float
    clock: Clock
    sleep: Sleep

    def spawn_flusher(self, stream: NativeAnswerStream) -> asyncio.Task[None]: ...

    def classic(self, team_id: str, channel: str, thread_ts: str) -> ClassicStream: ...

    def adopt(
        self, team_id: str, channel: str, thread_ts: str, *, ts: str, state: AnswerState
    ) -> ClassicStream: ...

    async def settle(self, grace: float) -> None: ...


def safe_markdown(text: str) -> str:
    """Model Markdown made safe to stream: no mention can ping, no link can hide where it goes,
    and no answer grows past what Slack can hold (see `bot.render.answer.answer_markdown`)."""
    return answer_markdown(text)


@dataclass(frozen=True)
class _Append:
    """One chat.appendStream call, and what it shows once Slack accepted it."""

    args: dict[str, Any]
    text: str
    title: str | None  # the status card's new title, when this call changes it
    status: str | None  # the status card's new status, when this call changes it


class NativeAnswerStream(ThreadExtras):
    """The same interface as `AnswerStream` (start / update / finish), over chat streaming."""

    p: StreamHost

    def __init__(
        self,
        publisher: StreamHost,
        team_id: str,
        channel: str,
        thread_ts: str,
        *,
        user_id: str,
        in_dm: bool,
    ) -> None:
        self.p = publisher
        self.team_id = team_id
        self.channel = channel
        self.thread_ts = thread_ts
        self.user_id = user_id
        self.in_dm = in_dm
        self.ts: str | None = None
        self.calls = 0
        self._state = AnswerState()
        self._streamed = ""  # the safe Markdown Slack accepted so far
        self._tasks: dict[str, str] = {}  # task id → status Slack accepted
        self._task_title = ""
        self._final = False
        self._finishing = asyncio.Event()  # wakes the flusher from any pause
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.orphaned = False  # finish() was cancelled while the flusher kept going
        self._last = 0.0
        self._first_text = FirstText(publisher.clock)
        self._failures = 0  # transient failures of intermediate appends in a row
        self._streaming = False  # a stream was started and not yet known to be stopped
        self._classic: ClassicStream | None = None
        self._adopted = False  # `_classic` edits the streamed message (rather than its own)
        self._gone = False  # Slack said mid-answer that the bot cannot write here any more

    @property
    def channel_gone(self) -> bool:
        """Slack refused a write mid-answer because the channel is gone (see
        `Publisher.open`): no further write is tried, `finish()` raises it at once."""
        if self._classic is not None and self._classic.channel_gone:
            return True
        return self._gone

    @property
    def truncated(self) -> bool:
        """The final answer was cut short (its note promises the full answer below)."""
        if self._classic is not None:
            return self._classic.truncated
        return len(self._state.text) > NATIVE_MAX_CHARS

    @property
    def appends(self) -> Budget:
        return self.p.budgets.bucket(f"append:{self.team_id}", APPENDS_PER_SECOND, APPEND_BURST)

    @property
    def starts(self) -> Budget:
        return self.p.budgets.bucket(f"start:{self.team_id}", STARTS_PER_SECOND, START_BURST)

    @property
    def stops(self) -> Budget:
        return self.p.budgets.bucket(f"stop:{self.team_id}", STOPS_PER_SECOND, STOP_BURST)

    def _recipient(self) -> dict[str, Any]:
        if self.in_dm:
            return {}
        return {"recipient_user_id": self.user_id, "recipient_team_id": self.team_id}

    async def start(self, state: AnswerState) -> str:
        """Open the stream, or post a classic placeholder when streaming is not to be had.

        Raises SlackDeliveryError when the bot cannot write here (`channel_gone`) or its token
        is bad (`auth_failed`): no fallback is tried then, it would fail the same way.
        """
        self._state = state
        title = status_text(state)
        if not await self.p.caller.acquire(self.starts, max_wait=0.0):
            # Many DMs at once: waiting for a stream slot would delay the placeholder by
            # seconds. The classic post shows up at once (DMs are separate post buckets).
            log.info("native_start_budget_empty")
            return await self._fall_back(state)
        try:  # one try: a 429 or 5xx here would otherwise hold the placeholder for seconds
            data = await self.p.caller.call(
                "chat.startStream",
                self.starts,
                channel=self.channel,
                thread_ts=self.thread_ts,
                chunks=[self._task("status", title, "in_progress")],
                **self._recipient(),
            )
        except (RateLimited, Transient) as exc:
            log.info("native_start_unavailable", error=type(exc).__name__)
            return await self._fall_back(state)
        except SlackDeliveryError as exc:
            if exc.channel_gone or exc.auth_failed:
                raise
            log.info("native_streaming_refused", error=exc.error)
            return await self._fall_back(state)
        self.calls += 1
        self.ts = str(data["ts"])
        self._streaming = True
        self._task_title = title
        self._tasks["status"] = "in_progress"
        self._last = self.p.clock()
        # Registered like the classic flushers, so shutdown lets a final stopStream through.
        self._flusher = self.p.spawn_flusher(self)
        return self.ts

    async def _fall_back(self, state: AnswerState) -> str:
        self._classic = self.p.classic(self.team_id, self.channel, self.thread_ts)
        return await self._classic.start(state)

    def abandon(self) -> None:
        """Stop writing, without stopping the stream: another replica finishes this answer
        (it stops the stream, then edits the message). Never raises."""
        self._final = True
        if self._flusher is not None:
            self._flusher.cancel()
        if self._classic is not None:
            self._classic.abandon()

    def update(self) -> None:
        if self._classic is not None:
            self._classic.update()
        elif not self._final:
            self._first_text.arrived(bool(self._state.text))
            self._dirty.set()

    async def finish(self) -> None:
        """Deliver the final answer for sure, even when `start()` failed.

        The caller answers anyway after a failed `start()` and counts on this to deliver: when
        no stream was opened and no classic stream took over, the final render is posted.
        Returns only once Slack accepted the final text; raises SlackDeliveryError otherwise
        (an unexpected failure is logged and raised as one, "unexpected: <TypeName>").
        """
        await delivered(self._finish(), "chat.stopStream")

    async def _finish(self) -> None:
        if self._classic is None and self._flusher is None:
            self._final = True
            log.warning("native_stream_never_opened", posting_instead=True)
            await self._post_fresh()
            return
        if self._classic is None:
            self._final = True
            self._finishing.set()
            self._dirty.set()
        if self._flusher is not None:
            if not await outlive_flusher(self, self._flusher) and self._classic is None:
                await self._recover()
                return
        if self._classic is not None:
            await self._finish_classic()

    async def _recover(self) -> None:
        """After a crash mid-stream (a flusher exists, so the stream was opened): stop it and
        finish classically, or post anew if Slack still holds it as streaming."""
        if self._streaming:
            await self._stop_quietly()
        if self._streaming:
            await self._post_fresh()
            return
        self._adopt_classic()
        await self._finish_classic()

    async def _finish_classic(self) -> None:
        """The classic stream delivers the final answer; an adopted message it cannot edit
        (Slack still holds it as streaming) gets the answer posted below it instead."""
        classic = self._classic
        assert classic is not None
        try:
            await classic.finish()
        except SlackDeliveryError as exc:
            if not self._adopted or exc.auth_failed or exc.channel_gone:
                raise  # a fresh post would be refused the same way
            log.warning("native_adopted_message_not_editable", error=exc.error)
            await self._post_fresh()
        finally:
            self.calls += classic.calls
            classic.calls = 0

    async def _post_fresh(self) -> None:
        """Post the final render as new classic messages in the thread."""
        fresh = self.p.classic(self.team_id, self.channel, self.thread_ts)
        self._classic, self._adopted = fresh, False
        try:
            await fresh.start(self._state)
            await fresh.finish()
        finally:
            self.calls += fresh.calls
            fresh.calls = 0

    @staticmethod
    def _task(task_id: str, title: str, status: str) -> dict[str, Any]:
        return {"type": "task_update", "id": task_id, "title": plain(title)[:150], "status": status}

    def _text_to_append(self) -> str:
        """New safe Markdown since the last append, held back to a word boundary mid-stream.

        Whitespace alone is never worth a call: it stays pending and goes out in front of the next
        words (or, at the end, is dropped: trailing whitespace shows nothing).
        """
        full = safe_markdown(self._state.text)
        if not full.startswith(self._streamed):
            return ""  # the final text rewrote what was streamed; _stop() settles it
        new = full[len(self._streamed) :]
        if not self._state.finished:
            cut = max(new.rfind(" "), new.rfind("\n"))
            new = new[: cut + 1] if cut >= 0 else ""
        new = new[:MAX_APPEND]
        return new if new.strip() else ""

    def _status_chunk(self) -> tuple[dict[str, Any] | None, str | None, str | None]:
        """The status card update due now (if any), with the title and status it would record."""
        state = self._state
        if state.phase is Phase.WORKING:
            title = status_text(state)
            if title != self._task_title:
                return self._task("status", title, "in_progress"), title, None
        elif self._tasks.get("status") == "in_progress":
            done = "error" if state.phase is Phase.FAILED and not state.text else "complete"
            names = ", ".join(dict.fromkeys(d.agent for d in state.delegations))
            return self._task("status", f"Asked {names}" if names else "Done", done), None, done
        return None, None, None

    def _next_append(self) -> _Append | None:
        """What the next appendStream call would send; nothing is recorded until it succeeds."""
        text = self._text_to_append()
        chunk, title, status = self._status_chunk()
        if not text and chunk is None:
            return None
        args: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
        if chunk is not None:
            chunks = [chunk]
            if text:
                chunks.append({"type": "markdown_text", "text": text})
            args["chunks"] = chunks
        else:
            args["markdown_text"] = text
        return _Append(args, text, title, status)

    def _appended(self, append: _Append) -> None:
        self.calls += 1
        self._streamed += append.text
        if append.text:
            self._first_text.shown()
        if append.title is not None:
            self._task_title = append.title
        if append.status is not None:
            self._tasks["status"] = append.status
        self._last = self.p.clock()

    async def _pause(self, seconds: float) -> None:
        """Sleep for `seconds` (on the publisher's clock), or less if `finish()` is called."""
        await sleep_unless(self.p.sleep, seconds, self._finishing)

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._pause(self._last + self.p.min_interval - self.p.clock())
            try:
                if self._final:
                    await self._stop()
                    return
                retry_in = await self._try_append()
            except SlackDeliveryError as exc:
                if exc.channel_gone:
                    log.warning("slack_channel_gone_mid_answer", method=exc.method, error=exc.error)
                    self._gone = True
                if exc.auth_failed or exc.channel_gone:
                    raise  # no classic fallback could write either: finish() reports it
                await self._abandon(exc)
                return
            if retry_in is not None:
                self._dirty.set()  # still something to show: try again after the pause
                await self._pause(retry_in)

    async def _try_append(self) -> float | None:
        """One intermediate append if the budget allows; else seconds to wait before retrying.

        Refusals that merely mean "not now" (budget, 429, 5xx) never raise; Slack refusing the
        call itself raises SlackDeliveryError.
        """
        append = self._next_append()
        if append is None:
            return None
        if self.p.alerts.blocked("slack") is not None:
            return HELD_WAIT  # a bad token: only the final stop is tried
        bucket = self.appends
        if not await self.p.caller.acquire(bucket, max_wait=0.0):
            return max(bucket.wait_hint(), MIN_WAIT)
        try:
            await self.p.caller.call("chat.appendStream", bucket, **append.args)
        except RateLimited as exc:  # the bucket is paused for Retry-After
            return max(exc.retry_after, bucket.wait_hint(), MIN_WAIT)
        except Transient as exc:
            self._failures += 1
            if exc.retry_after is not None:  # a 5xx that said when to come back
                delay = max(exc.retry_after, bucket.wait_hint(), MIN_WAIT)
            else:
                delay = retry_delay(self._failures, backoff=BACKOFF, max_delay=MAX_BACKOFF)
            log.info("native_append_retry", error=str(exc), retry_in=delay)
            return delay
        self._failures = 0
        self._appended(append)
        return None

    async def _stop(self) -> None:
        """Append whatever is left, then stop the stream with any closing notice."""
        state = self._state
        while (append := self._next_append()) is not None:  # long final text: 11k pieces
            await self.p.caller.call_reliably("chat.appendStream", self.appends, **append.args)
            self._appended(append)
        full = safe_markdown(state.text)
        exact = self._streamed.rstrip() == full.rstrip()
        args: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
        closing = self._closing_text()
        if closing:
            args["markdown_text"] = f"\n\n{closing}" if self._streamed.strip() else closing
        await self.p.caller.call_reliably("chat.stopStream", self.stops, **args)
        self.calls += 1
        self._streaming = False
        if not exact and full.strip():
            # The authoritative final text differs from what streamed: show the final one.
            self._adopt_classic()

    def _closing_text(self) -> str:
        """What ends the message besides the answer: the failure notice, or the "I couldn't
        answer" text when the run ended with no answer at all (never an empty message)."""
        state = self._state
        if state.phase is Phase.FAILED or (state.phase is Phase.DONE and not state.text.strip()):
            return render_answer(state)[-1].text.rsplit("\n\n", 1)[-1]
        return ""

    async def _abandon(self, exc: SlackDeliveryError) -> None:
        """Slack refused native streaming mid-answer: stop the stream, then edit it classically."""
        log.info("native_stream_lost", method=exc.method, error=exc.error)
        if exc.error == NOT_STREAMING:
            self._streaming = False
        elif self._streaming:
            # Also after a refused stopStream: a bare stop (no closing text) may still go
            # through, and an edit of a message Slack holds as streaming would fail.
            await self._stop_quietly()
        self._adopt_classic()

    async def _stop_quietly(self) -> None:
        """Stop the stream so its message can be edited; a refusal is logged, not raised."""
        try:
            await self.p.caller.call_reliably(
                "chat.stopStream", self.stops, channel=self.channel, ts=self.ts
            )
        except SlackDeliveryError as exc:
            if exc.error != NOT_STREAMING:
                log.warning("native_stream_stop_failed", error=exc.error)
                return
        else:
            self.calls += 1
        self._streaming = False

    def _adopt_classic(self) -> None:
        """Carry on with chat.update on the same message; `finish()` completes it there."""
        assert self.ts is not None
        self._classic = self.p.adopt(
            self.team_id, self.channel, self.thread_ts, ts=self.ts, state=self._state
        )
        self._adopted = True
