"""The publisher: the only code that calls Slack's write methods.

One `AnswerStream` per answer owns the thread messages of that answer. Callers tell it the answer
state changed as often as they like; a background flusher renders the newest state (only when it
is about to send) no faster than the per-message interval and the shared workspace budget allow.
`finish()` guarantees the final state is delivered (retrying 429s after `Retry-After` and transient
errors with backoff) and then posts any extra messages, such as the delegation trace.

The calls themselves, their failure classes and the retry rule live in `bot.slack.calls`; the
contract streams keep with their caller is on `Publisher.open`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError
from bot.render import render_answer
from bot.render.message import SlackMessage
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.calls import (
    RELIABLE_DEADLINE,
    REPOST_ERRORS,
    Clock,
    RateLimited,
    SlackCaller,
    Sleep,
    Transient,
    delivered,
    outlive_flusher,
    payload_args,
)
from bot.slack.native import NativeAnswerStream
from bot.state import AnswerState

__all__ = ["AnswerStream", "NativeAnswerStream", "Publisher", "Stream", "outlive_flusher"]

log = structlog.get_logger(__name__)

FIRST_TEXT_FACTOR = 0.25
# What a message adopted from elsewhere shows: never equal to a render, so it gets edited.
UNKNOWN = SlackMessage(text="\u0000")


@dataclass(frozen=True)
class Sent:
    ts: str
    payload: SlackMessage


class Publisher:
    """Creates answer streams; holds the Slack caller, the process-wide rate budgets and the
    operator alerts a bad Slack token raises (`alerts`, cleared by the next successful call).

    `clock` and `sleep` are what the streams and retries read and wait with (injectable for
    tests); a `budgets` passed in should be built with the same clock.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        budgets: Budgets | None = None,
        *,
        min_interval: float = 1.0,
        native_streaming: bool = False,
        reliable_deadline: float = RELIABLE_DEADLINE,
        alerts: OperatorAlerts | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.budgets = budgets or Budgets(clock=clock, sleep=sleep)
        self.alerts = alerts or OperatorAlerts(clock)
        self.caller = SlackCaller(
            client,
            alerts=self.alerts,
            clock=clock,
            sleep=sleep,
            reliable_deadline=reliable_deadline,
        )
        self.min_interval = min_interval
        self.native_streaming = native_streaming
        self.flushers: set[asyncio.Task[None]] = set()  # live answers' flushers (for shutdown)

    def spawn_flusher(self, stream: AnswerStream | NativeAnswerStream) -> asyncio.Task[None]:
        """Run `stream`'s flush loop as a task shutdown can wait for (see `settle`)."""
        task = asyncio.create_task(stream._flush_loop(), name=f"flush-{stream.thread_ts}")
        self.flushers.add(task)
        task.add_done_callback(lambda done: self._flusher_done(done, stream))
        return task

    def _flusher_done(
        self, task: asyncio.Task[None], stream: AnswerStream | NativeAnswerStream
    ) -> None:
        """Forget the flusher; log its failure when nobody is left to hear it (an answer
        cancelled at shutdown leaves its shielded flusher to finish alone)."""
        self.flushers.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved: no "never retrieved" noise
        if exc is not None and stream.orphaned:
            log.error(
                "answer_flusher_failed",
                error_type=type(exc).__name__,
                error=getattr(exc, "error", str(exc)),
            )

    async def settle(self, grace: float) -> None:
        """Shutdown: give flushers still delivering a final edit up to `grace` seconds."""
        if self.flushers:
            await asyncio.wait(set(self.flushers), timeout=grace)

    def open(
        self,
        team_id: str,
        channel: str,
        thread_ts: str,
        *,
        user_id: str = "",
        channel_type: str | None = None,
    ) -> AnswerStream | NativeAnswerStream:
        """The stream for one answer: native chat streaming in DMs when enabled, else classic.

        What the caller may rely on, for either kind of stream:

        * `await stream.start(state)` posts the placeholder. It raises SlackDeliveryError when
          Slack refused it for good: `.channel_gone` (the bot cannot write here: do not run the
          question) or `.auth_failed` (the token is bad: an operator alert is raised). Other
          failures of the placeholder also raise SlackDeliveryError; `finish()` then posts.
        * `stream.update()` never waits and never raises.
        * `await stream.finish()` returns normally only when Slack accepted the final text;
          otherwise it raises SlackDeliveryError (never another exception type).
        """
        if self.native_streaming and channel_type == "im":
            return NativeAnswerStream(
                self, team_id, channel, thread_ts, user_id=user_id, in_dm=True
            )
        return AnswerStream(self, team_id, channel, thread_ts)

    def classic(self, team_id: str, channel: str, thread_ts: str) -> AnswerStream:
        """A classic stream (native streaming falls back to it)."""
        return AnswerStream(self, team_id, channel, thread_ts)

    def adopt(
        self, team_id: str, channel: str, thread_ts: str, *, ts: str, state: AnswerState
    ) -> AnswerStream:
        """A classic stream editing message `ts` from now on (a native stream gave it up)."""
        return AnswerStream.adopt(self, team_id, channel, thread_ts, ts=ts, state=state)


class AnswerStream:
    """The Slack messages of one answer in one thread, kept in step with the newest render."""

    def __init__(self, publisher: Publisher, team_id: str, channel: str, thread_ts: str) -> None:
        self.p = publisher
        self.team_id = team_id
        self.channel = channel
        self.thread_ts = thread_ts
        self.sent: list[Sent] = []
        self._state = AnswerState()
        self._desired: list[SlackMessage] = []
        self._final = False
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()  # ends a wait for budget early: first text, or the end
        self._refused_by: TokenBucket | None = None  # the bucket that last said "not now"
        self.orphaned = False  # finish() was cancelled while the flusher kept going
        self._flusher: asyncio.Task[None] | None = None
        self._last_edit = 0.0
        self._text_shown = False
        self.calls = 0

    @classmethod
    def adopt(
        cls,
        publisher: Publisher,
        team_id: str,
        channel: str,
        thread_ts: str,
        *,
        ts: str,
        state: AnswerState,
    ) -> AnswerStream:
        """Take over a message posted some other way (a native stream): edit it from now on."""
        stream = cls(publisher, team_id, channel, thread_ts)
        stream._state = state
        stream.sent.append(Sent(ts, UNKNOWN))
        stream._flusher = publisher.spawn_flusher(stream)
        stream._dirty.set()
        return stream

    @property
    def edits(self) -> TokenBucket:
        return self.p.budgets.edits(self.team_id)

    @property
    def posts(self) -> TokenBucket:
        return self.p.budgets.posts(self.channel)

    async def start(self, state: AnswerState) -> str:
        """Post the placeholder right away (it is what tells the user we heard them)."""
        self._state = state
        payloads = render_answer(state)
        first = payloads[0]
        data = await self.p.caller.call_reliably(
            "chat.postMessage",
            self.posts,
            channel=self.channel,
            thread_ts=self.thread_ts,
            **payload_args(first),
        )
        self.calls += 1
        self.sent.append(Sent(str(data["ts"]), first))
        # The per-message interval is between edits; the first edit may follow the post at once.
        self._flusher = self.p.spawn_flusher(self)
        if len(payloads) > 1:
            self._dirty.set()
        return self.sent[0].ts

    def update(self) -> None:
        """The state changed; cheap, never waits, the flusher renders and paces it."""
        if not self._final:
            self._dirty.set()
            if self._first_words_due:
                self._wake.set()  # a waiting activity edit becomes a first-words edit

    async def finish(self) -> None:
        """Deliver the final render for sure (after every intermediate edit has settled).

        Returns only once Slack accepted the final text; raises SlackDeliveryError otherwise
        (an unexpected failure is logged and raised as one, "unexpected: <TypeName>").
        Normally the flusher sends it. When there is no flusher (the placeholder never made it)
        or it died of something unexpected, the final state is sent from here instead.
        """
        await delivered(self._finish(), "chat.update")

    async def _finish(self) -> None:
        self._final = True
        self._dirty.set()
        self._wake.set()
        if self._flusher is not None and await outlive_flusher(self, self._flusher):
            return
        self._desired = list(render_answer(self._state))
        for index in self._pending():
            await self._send(index, reliable=True)
        await self._drop_extras()

    async def _drop_extras(self) -> None:
        """The final answer needs fewer messages than were shown: delete the stale ones."""
        while len(self.sent) > len(self._desired):
            extra = self.sent.pop()
            try:
                await self.p.caller.call_reliably(
                    "chat.delete", self.edits, channel=self.channel, ts=extra.ts
                )
                self.calls += 1
            except SlackDeliveryError as exc:
                log.warning("slack_delete_failed", error=exc.error, ts=extra.ts)

    async def post_below(self, payloads: Sequence[SlackMessage]) -> None:
        """Post further messages in the thread (the delegation trace), in order."""
        for payload in payloads:
            await self.p.caller.call_reliably(
                "chat.postMessage",
                self.posts,
                channel=self.channel,
                thread_ts=self.thread_ts,
                **payload_args(payload),
            )
            self.calls += 1

    @property
    def _first_words_due(self) -> bool:
        """Answer text has arrived and no edit has shown any yet."""
        return bool(self._state.text) and not self._text_shown

    def _interval(self) -> float:
        """Seconds to keep between edits of this message right now.

        The first edit that carries answer text follows an activity-only edit after a quarter
        interval: the first words matter most, and Slack tolerates short bursts per message.
        """
        if self._first_words_due:
            return self.p.min_interval * FIRST_TEXT_FACTOR
        return self.p.min_interval

    async def _wait_for_interval(self) -> None:
        """Sleep until the next edit is allowed, re-checking whenever the state changes."""
        while not self._final:
            wait = self._last_edit + self._interval() - self.p.clock()
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=wait)
            self._dirty.clear()
        wait = self._last_edit + self._interval() - self.p.clock()
        if wait > 0:
            await self.p.sleep(wait)

    def _pending(self) -> list[int]:
        return [
            i
            for i, payload in enumerate(self._desired)
            if i >= len(self.sent) or self.sent[i].payload != payload
        ]

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._wait_for_interval()
            final = self._final
            self._desired = list(render_answer(self._state))
            carries_text = bool(self._state.text)
            for index in self._pending():
                if final:
                    await self._send(index, reliable=True)
                elif not await self._send(index, reliable=False):
                    self._dirty.set()  # budget says not now; the next round carries newer text
                    await self._wait_for_budget()
                    break
            else:
                self._text_shown = self._text_shown or carries_text
            if final and not self._pending():
                await self._drop_extras()
                return
            if self._final:
                self._dirty.set()

    async def _wait_for_budget(self) -> None:
        """After a refusal: until the bucket could say yes, or sooner if the edit became more
        urgent (its first words arrived, or the answer is complete)."""
        bucket = self._refused_by or self.edits
        reserve = self._edit_reserve() if bucket is self.edits else 0.0
        hint = min(max(bucket.wait_hint(reserve), 0.05), 5.0)
        if self._held():
            hint = 5.0
        self._wake.clear()  # the refused render was the newest state: older wake-ups are stale
        if self._final:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=hint)

    def _edit_reserve(self) -> float:
        """Tokens an intermediate edit must leave in the workspace bucket.

        Final edits leave none (they wait their turn); neither does the first edit showing answer
        text, though it never goes before a final edit already waiting (try_take refuses while
        one waits). Under load the budget then goes to first words and final answers, and
        progress edits in between are what gets thinned out.
        """
        return 0.0 if self._first_words_due else self.p.budgets.edit_reserve

    def _held(self) -> bool:
        """The bot token is known bad (operator alert): intermediate writes are not tried, so
        an outage costs Slack one call per answer, the final one."""
        return self.p.alerts.blocked("slack") is not None

    async def _send(self, index: int, *, reliable: bool) -> bool:
        payload = self._desired[index]
        if index >= len(self.sent):
            return await self._post(payload, reliable=reliable)
        if not reliable and (self._held() or not self.edits.try_take(self._edit_reserve())):
            self._refused_by = self.edits
            return False
        args = {"channel": self.channel, "ts": self.sent[index].ts, **payload_args(payload)}
        try:
            if reliable:
                await self.p.caller.call_reliably("chat.update", self.edits, **args)
            else:
                await self.p.caller.call("chat.update", self.edits, **args)
        except (RateLimited, Transient):
            self._last_edit = self.p.clock()  # only intermediate edits get here: pace retries
            self._refused_by = self.edits
            return False
        except SlackDeliveryError as exc:
            if exc.error not in REPOST_ERRORS:
                if reliable:
                    raise
                log.warning("slack_edit_failed", error=exc.error)
                self._last_edit = self.p.clock()
                self._refused_by = self.edits
                return False
            log.info("slack_edit_refused_posting_instead", error=exc.error)
            data = await self.p.caller.call_reliably(
                "chat.postMessage",
                self.posts,
                channel=self.channel,
                thread_ts=self.thread_ts,
                **payload_args(payload),
            )
            self.sent[index] = Sent(str(data["ts"]), payload)
            self.calls += 1
            return True
        self.calls += 1
        self.sent[index] = Sent(self.sent[index].ts, payload)
        self._last_edit = self.p.clock()
        return True

    async def _post(self, payload: SlackMessage, *, reliable: bool) -> bool:
        args = {"channel": self.channel, "thread_ts": self.thread_ts, **payload_args(payload)}
        if reliable:
            data = await self.p.caller.call_reliably("chat.postMessage", self.posts, **args)
        else:
            self._refused_by = self.posts
            if self._held() or not self.posts.try_take():
                return False
            try:
                data = await self.p.caller.call("chat.postMessage", self.posts, **args)
            except (RateLimited, Transient):
                self._last_edit = self.p.clock()
                return False
            except SlackDeliveryError as exc:  # the final post will try again, reliably
                log.warning("slack_post_failed", error=exc.error)
                self._last_edit = self.p.clock()
                return False
        self.calls += 1
        self.sent.append(Sent(str(data["ts"]), payload))
        return True


Stream = AnswerStream | NativeAnswerStream
