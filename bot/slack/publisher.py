"""The publisher: the only code that calls Slack's write methods.

One `AnswerStream` per answer owns the thread messages of that answer. Callers tell it the answer
state changed as often as they like; a background flusher renders the newest state (only when it
is about to send) no faster than the per-message interval and the shared workspace budget allow.
`finish()` guarantees the final state is delivered (retrying 429s after `Retry-After` and transient
errors with backoff) and then posts any extra messages, such as the delegation trace.

Status first: until the answer has text, its progress shows as the thread's assistant status
(`bot.slack.status`), not as a placeholder message, so no `chat.update` budget goes to it. The
first answer text is posted (the channel's post budget, not the workspace's update budget), so
under load the first words are not queued behind everyone's edits; edits follow. A placeholder
message is posted at once only for notices that must stay in the thread (in line, after your
previous question, a final notice) or when Slack refuses the status.

When Slack refuses to edit a message (`msg_too_long`, `edit_window_closed`,
`cant_update_message`, ...), the stream stops editing: no further progress is shown, the final
answer is posted once as new messages, and the messages shown so far are deleted (a message too
long to edit that cannot be deleted either is shortened to "(answer below)"). When Slack says
mid-answer that the channel is gone, every further write stops (`channel_gone`).

Every message a stream posts carries Slack message metadata naming it (`powabot_answer`, with
the answer's id and the post's number). A post that failed ambiguously (the connection broke
after the request was sent: it may have landed) is looked up in the thread
(conversations.replies with include_all_metadata) before it is sent again; copies found are
adopted (the first) or deleted (the rest), so a lost response never leaves a duplicate
placeholder hanging.
Pacing waits through the publisher's injectable `sleep`, so a fake clock drives it in tests.

The calls themselves, their failure classes and the retry rule live in `bot.slack.calls`; the
contract streams keep with their caller is on `Publisher.open`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError
from bot.render import render_answer, status_text
from bot.render.answer import ANSWER_BELOW, is_truncated
from bot.render.message import SlackMessage
from bot.slack.budget import Budget, BudgetBook, Budgets
from bot.slack.calls import (
    RELIABLE_DEADLINE,
    REPOST_ERRORS,
    Clock,
    FirstText,
    RateLimited,
    SlackCaller,
    Sleep,
    Transient,
    delivered,
    outlive_flusher,
    payload_args,
    sleep_unless,
)
from bot.slack.files import ThreadExtras
from bot.slack.native import NativeAnswerStream
from bot.slack.status import ThreadStatus
from bot.state import AnswerState

__all__ = ["AnswerStream", "NativeAnswerStream", "Publisher", "Stream", "outlive_flusher"]

log = structlog.get_logger(__name__)

FIRST_TEXT_FACTOR = 0.25
METADATA_TYPE = "powabot_answer"  # Slack message metadata event_type on every answer post
READS_PER_SECOND = 45 / 60  # conversations.replies: Tier 3, per workspace
READ_BURST = 3.0
# Slack refusing a message's blocks: the message is sent again as its text alone.
BLOCK_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long"})
LOOKUP_PAGES = 5  # thread pages (200 messages each) searched for a post that may have landed
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
    tests); a `budgets` passed in should be built with the same clock. `budgets` is the
    in-process `Budgets` by default, or the replicas' shared one (`bot.slack.shared_budget`).
    """

    def __init__(
        self,
        client: AsyncWebClient,
        budgets: BudgetBook | None = None,
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
        self.budgets: BudgetBook = budgets or Budgets(clock=clock, sleep=sleep)
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

        * `await stream.start(state)` tells the user we heard them: the thread's status (then
          it returns None: no message yet), or a placeholder message (its ts is returned). It
          raises SlackDeliveryError when Slack refused it for good: `.channel_gone` (the bot
          cannot write here: do not run the question) or `.auth_failed` (the token is bad: an
          operator alert is raised). Other failures of the placeholder also raise
          SlackDeliveryError; `finish()` then posts.
        * `stream.on_posted` (set by the caller, optional) is awaited with (ts, native) when the
          answer's first message is posted after `start()` (for the lease record).
        * `stream.update()` never waits and never raises.
        * `await stream.finish()` returns normally only when Slack accepted the final text;
          otherwise it raises SlackDeliveryError (never another exception type).
        * `stream.channel_gone` turns True when Slack refused a write mid-answer because the
          bot cannot write to the channel any more: further writes stop, the caller should
          cancel the run, and `finish()` raises SlackDeliveryError (`.channel_gone`) at once.
        * `stream.truncated`: the final render cut the answer short (its note says the full
          answer is attached); then `await stream.attach_full_answer(markdown, title)` attaches
          it as a file in the thread (or posts a line saying it could not). Never raises
          SlackDeliveryError.
        * (classic) `await stream.amend()` after `finish()`: the state changed since (sources
          added): the messages whose render changed are edited, reliably; raises like finish.
        """
        if self.native_streaming:  # DMs and channel threads (with the recipient there)
            return NativeAnswerStream(
                self, team_id, channel, thread_ts, user_id=user_id, in_dm=channel_type == "im"
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


class AnswerStream(ThreadExtras):
    """The Slack messages of one answer in one thread, kept in step with the newest render."""

    p: Publisher

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
        self._refused_by: Budget | None = None  # the budget that last said "not now"
        self.orphaned = False  # finish() was cancelled while the flusher kept going
        self._flusher: asyncio.Task[None] | None = None
        self._last_edit = 0.0
        self._last_status = -math.inf
        self._text_shown = False
        self._first_text = FirstText(publisher.clock)
        self._edits_refused: str | None = None  # Slack's code: edit no more, post the final
        self._gone: SlackDeliveryError | None = None  # the channel went away mid-answer
        self.answer_id = uuid.uuid4().hex  # names this answer's posts in their metadata
        self._post_numbers = itertools.count(1)
        self._numbered: dict[int, int] = {}  # message index → number of its post in flight
        self._unsure: set[int] = set()  # indexes whose last post may have landed after all
        self.calls = 0
        # The thread's status shows progress while there is no message (None: never tried).
        self.status: ThreadStatus | None = None
        # Awaited with (ts, native=False) when the first message is posted after start().
        self.on_posted: Callable[[str, bool], Awaitable[None]] | None = None
        self._announced: str | None = None  # the first message's ts the caller knows

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
    def edits(self) -> Budget:
        return self.p.budgets.edits(self.team_id)

    @property
    def reply_ts(self) -> str | None:
        """The ts of the answer's last message (where its feedback buttons are), if posted."""
        return self.sent[-1].ts if self.sent else None

    @property
    def channel_gone(self) -> bool:
        """Slack refused a write mid-answer with not_in_channel / channel_not_found /
        is_archived: no further write is tried, and `finish()` raises that at once."""
        return self._gone is not None

    @property
    def truncated(self) -> bool:
        """The final render cuts the answer short; its note promises the full answer below."""
        return is_truncated(self._state)

    @property
    def posts(self) -> Budget:
        return self.p.budgets.posts(self.channel)

    async def start(self, state: AnswerState) -> str | None:
        """Tell the user right away that we heard them: the thread's status, or a message.

        The status (no message, None returned) unless the state carries a notice that must be
        a message (in line, after your previous question, a final notice) or Slack refuses
        the status; then the placeholder is posted and its ts returned. Raises
        SlackDeliveryError as `Publisher.open` says.
        """
        self._state = state
        if not (state.finished or state.queued or state.after_previous):
            self.status = self._thread_status()
            try:
                shown = await self.status.show(status_text(state), first=True)
            finally:
                self.calls += self.status.calls
            if shown:
                self._flusher = self.p.spawn_flusher(self)
                if state.text.strip():
                    self._dirty.set()
                return None
        payloads = render_answer(state)
        first = payloads[0]
        self.sent.append(await self._post_message(0, first, reliable=True))
        self._announced = self.sent[0].ts
        # The per-message interval is between edits; the first edit may follow the post at once.
        self._flusher = self.p.spawn_flusher(self)
        if len(payloads) > 1:
            self._dirty.set()
        return self.sent[0].ts

    def _thread_status(self) -> ThreadStatus:
        return ThreadStatus(
            self.p.caller,
            self.p.budgets,
            self.team_id,
            self.channel,
            self.thread_ts,
            clock=self.p.clock,
        )

    def resume(self, state: AnswerState) -> None:
        """Carry on an answer whose thread status was shown already (by a native stream that
        could not start): no status call first, the flusher posts its first words at once."""
        self._state = state
        self.status = self._thread_status()
        self._flusher = self.p.spawn_flusher(self)
        self._dirty.set()

    def abandon(self) -> None:
        """Stop writing, without a final edit: another replica finishes this answer (it was
        handed over at shutdown). Never raises."""
        self._final = True  # update() does nothing from now on
        if self._flusher is not None:
            self._flusher.cancel()

    def update(self) -> None:
        """The state changed; cheap, never waits, the flusher renders and paces it."""
        if not self._final:
            self._first_text.arrived(bool(self._state.text))
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

    async def amend(self) -> None:
        """After `finish()`: deliver the final render again, because the state changed since
        (sources were added). Only the messages whose render changed are edited, reliably;
        returns once Slack accepted them, else raises SlackDeliveryError like `finish()`."""
        await delivered(self._amend(), "chat.update")

    async def _amend(self) -> None:
        if not self._final or (self._flusher is not None and not self._flusher.done()):
            await self._finish()  # not finished yet: this is the finish
            return
        self._raise_if_gone()
        if self._edits_refused is None:
            await self._deliver_final(amending=True)
        if self._edits_refused is not None:  # the answer stands as delivered; not posted again
            raise SlackDeliveryError("chat.update", self._edits_refused)

    async def _finish(self) -> None:
        self._final = True
        self._dirty.set()
        self._wake.set()
        if self._flusher is not None and await outlive_flusher(self, self._flusher):
            self._raise_if_gone()
            return
        self._raise_if_gone()
        await self._deliver_final()

    def _raise_if_gone(self) -> None:
        if self._gone is not None:
            raise SlackDeliveryError(self._gone.method, self._gone.error)

    async def _deliver_final(self, *, amending: bool = False) -> None:
        """Edit the final render into the messages; once Slack refuses an edit, post it anew
        (unless `amending` a delivered answer: then the caller reports the refusal)."""
        self._desired = list(render_answer(self._state))
        for _ in range(2):  # twice: a post found to have landed earlier may still need an edit
            if self._edits_refused or not self._pending():
                break
            for index in self._pending():
                if not await self._send(index, reliable=True):
                    break  # the edit was refused: the whole answer is posted below instead
        if self._edits_refused:
            if amending:
                return
            await self._post_anew()
        else:
            await self._drop_extras()
        if self._state.text:
            self._first_text.shown()

    async def _post_anew(self) -> None:
        """Post the final render as new messages, then remove the ones shown before (a
        half-finished copy of the answer must not hang above it)."""
        stale, self.sent = self.sent, []
        for index, payload in enumerate(self._desired):
            self._numbered.pop(index, None)  # a new post, not one that may have landed before
            self._unsure.discard(index)
            self.sent.append(await self._post_message(index, payload, reliable=True))
            await self._posted(index)
        for message in stale:
            await self._remove(message)

    async def _remove(self, message: Sent) -> None:
        """Delete a message the answer was posted below; one too long to edit that cannot be
        deleted is shortened to a pointer instead. Logged either way, never raised."""
        try:
            await self.p.caller.call_reliably(
                "chat.delete", self.edits, channel=self.channel, ts=message.ts
            )
        except SlackDeliveryError as exc:
            failed = exc.error
        else:
            self.calls += 1
            log.info("slack_stale_message_deleted", ts=message.ts, refused=self._edits_refused)
            return
        if self._edits_refused == "msg_too_long":
            try:
                await self.p.caller.call_reliably(
                    "chat.update",
                    self.edits,
                    channel=self.channel,
                    ts=message.ts,
                    **payload_args(SlackMessage(ANSWER_BELOW)),
                )
            except SlackDeliveryError as exc:
                failed = f"{failed}, then {exc.error}"
            else:
                self.calls += 1
                log.info("slack_stale_message_shortened", ts=message.ts, delete_error=failed)
                return
        log.warning("slack_stale_message_left", ts=message.ts, error=failed)

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
            await sleep_unless(self.p.sleep, wait, self._dirty)
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

    def _status_shows(self) -> ThreadStatus | None:
        """The thread's status, while it is what shows the answer's progress: no message
        yet, no answer text yet, not final, and Slack took the answer's first status."""
        status = self.status
        if status is None or status.refused or self.sent or self._final:
            return None
        if self._state.finished:  # no status line left to show: the final goes out
            return None
        return None if self._state.text.strip() else status

    async def _show_status(self, status: ThreadStatus) -> None:
        """Progress as the thread's status (no message, no edit budget): when the line changed
        or Slack would soon clear it; paced like edits. A status refused for budget is tried
        again when the bucket could allow it, or sooner if the answer moves on."""
        text = status_text(self._state)
        if not text or not status.due(text):
            return
        wait = self._last_status + self.p.min_interval - self.p.clock()
        if wait > 0:
            self._dirty.set()  # shown after the pause, newest state then
            self._wake.clear()  # only first words or the end arriving from now cut it short
            await sleep_unless(self.p.sleep, wait, self._wake)
            return
        before = status.calls
        shown = await status.show(text)
        self.calls += status.calls - before
        if status.gone is not None:
            self._gone = status.gone
            return
        self._last_status = self.p.clock()
        if not shown and status.calls == before and not status.refused:  # the bucket was empty
            self._wake.clear()
            hint = min(max(status.bucket.wait_hint(), 0.05), 5.0)
            self._dirty.set()
            await sleep_unless(self.p.sleep, hint, self._wake)

    async def _flush_loop(self) -> None:
        while True:
            status = self._status_shows()
            if status is not None and not self._dirty.is_set():
                # Nothing new: refresh what shows before Slack clears it (2 minutes).
                await sleep_unless(self.p.sleep, status.refresh_in(), self._dirty)
            else:
                await self._dirty.wait()
            self._dirty.clear()
            if self._gone is not None:
                return  # nothing can reach the channel; finish() reports it
            if self._edits_refused and not self._final:
                continue  # no more progress: only the final answer goes out, posted anew
            status = self._status_shows()
            if status is not None:
                await self._show_status(status)
                continue
            await self._wait_for_interval()
            if self._final:
                await self._deliver_final()
                return
            self._desired = list(render_answer(self._state))
            carries_text = bool(self._state.text)
            for index in self._pending():
                if not await self._send(index, reliable=False):
                    if self._gone is None and not self._edits_refused:
                        self._dirty.set()  # not now; the next round carries newer text
                        await self._wait_for_budget()
                    break
            else:
                self._text_shown = self._text_shown or carries_text
                if carries_text:
                    self._first_text.shown()
            if self._final:
                self._dirty.set()

    async def _wait_for_budget(self) -> None:
        """After a refusal: until the bucket could say yes, or sooner if the edit became more
        urgent (its first words arrived, or the answer is complete)."""
        bucket = self._refused_by or self.edits
        reserve = self._edit_reserve() if bucket == self.edits else 0.0
        hint = min(max(bucket.wait_hint(reserve), 0.05), 5.0)
        if self._held():
            hint = 5.0
        self._wake.clear()  # the refused render was the newest state: older wake-ups are stale
        if self._final:
            return
        await sleep_unless(self.p.sleep, hint, self._wake)

    def _edit_reserve(self) -> float:
        """Tokens an intermediate edit must leave in the workspace bucket.

        Final edits leave none (they wait their turn); neither does the first edit showing answer
        text, though it never goes before a final edit already waiting (a final's reservation
        is ahead of it in line). Under load the budget then goes to first words and final
        answers, and progress edits in between are what gets thinned out.
        """
        return 0.0 if self._first_words_due else self.p.budgets.edit_reserve

    def _edit_wait(self) -> float:
        """Seconds an intermediate edit may wait for budget: none for progress (skipped, the
        next edit carries newer text), a little for the first words."""
        return self.p.min_interval * FIRST_TEXT_FACTOR if self._first_words_due else 0.0

    def _held(self) -> bool:
        """The bot token is known bad (operator alert): intermediate writes are not tried, so
        an outage costs Slack one call per answer, the final one."""
        return self.p.alerts.blocked("slack") is not None

    async def _send(self, index: int, *, reliable: bool) -> bool:
        payload = self._desired[index]
        if index >= len(self.sent):
            return await self._post(payload, reliable=reliable)
        if not reliable and (
            self._held()
            or not await self.p.caller.acquire(
                self.edits, max_wait=self._edit_wait(), reserve=self._edit_reserve()
            )
        ):
            self._refused_by = self.edits
            return False
        args = {"channel": self.channel, "ts": self.sent[index].ts, **payload_args(payload)}
        try:
            if reliable:
                await self._update_reliably(args)
            else:
                await self.p.caller.call("chat.update", self.edits, **args)
        except (RateLimited, Transient):
            self._last_edit = self.p.clock()  # only intermediate edits get here: pace retries
            self._refused_by = self.edits
            return False
        except SlackDeliveryError as exc:
            if exc.error in REPOST_ERRORS:
                log.info("slack_edit_refused_posting_final_instead", error=exc.error)
                self._edits_refused = exc.error
                return False
            if reliable:
                raise
            self._write_failed(exc)
            return False
        self.calls += 1
        self.sent[index] = Sent(self.sent[index].ts, payload)
        self._last_edit = self.p.clock()
        return True

    async def _update_reliably(self, args: dict[str, Any]) -> None:
        """The final edit; should Slack refuse its blocks (the answer's sections and feedback
        buttons), it goes again as text alone: the answer never waits on its buttons."""
        try:
            await self.p.caller.call_reliably("chat.update", self.edits, **args)
        except SlackDeliveryError as exc:
            if exc.error not in BLOCK_ERRORS or not args.get("blocks"):
                raise
            log.warning("slack_blocks_refused_sending_text_only", error=exc.error)
            await self.p.caller.call_reliably(
                "chat.update", self.edits, **{k: v for k, v in args.items() if k != "blocks"}
            )

    def _write_failed(self, exc: SlackDeliveryError) -> None:
        """An intermediate write was refused: a gone channel stops all writes, anything else
        is paced like a failure (the final write will try again, reliably)."""
        if exc.channel_gone:
            log.warning("slack_channel_gone_mid_answer", method=exc.method, error=exc.error)
            self._gone = exc
            return
        log.warning("slack_write_failed", method=exc.method, error=exc.error)
        self._last_edit = self.p.clock()
        self._refused_by = self.edits if exc.method == "chat.update" else self.posts

    async def _post(self, payload: SlackMessage, *, reliable: bool) -> bool:
        """Post the next message of the answer. Message 0 is posted here when `start()`
        showed the status instead: with the first words (which may wait a quarter interval
        for the channel's post budget, like a first-words edit) or with the final answer."""
        index = len(self.sent)
        if reliable:
            self.sent.append(await self._post_message(index, payload, reliable=True))
            await self._posted(index)
            return True
        self._refused_by = self.posts
        if self._held() or not await self.p.caller.acquire(self.posts, max_wait=self._edit_wait()):
            return False
        try:
            self.sent.append(await self._post_message(index, payload, reliable=False))
        except (RateLimited, Transient):
            self._last_edit = self.p.clock()
            return False
        except SlackDeliveryError as exc:  # the final post will try again, reliably
            self._write_failed(exc)
            return False
        if index == 0:
            self._last_edit = self.p.clock()  # the post showed it: the next edit is paced
        await self._posted(index)
        return True

    async def _posted(self, index: int) -> None:
        """Tell `on_posted` about a new first message (not the one start() returned)."""
        if index != 0 or self.sent[0].ts == self._announced:
            return
        self._announced = ts = self.sent[0].ts
        if self.on_posted is None:
            return
        try:
            await self.on_posted(ts, False)
        except Exception as exc:
            log.error("answer_posted_callback_failed", error_type=type(exc).__name__)

    async def _post_message(self, index: int, payload: SlackMessage, *, reliable: bool) -> Sent:
        """Post `payload` as message `index` of the answer, named in its metadata; reliably
        (retries) or once (raises RateLimited / Transient / SlackDeliveryError).

        After an ambiguous failure the same post (same number) is looked up in the thread
        before it is sent again: if it landed, it is adopted instead.
        """
        number = self._numbered.setdefault(index, next(self._post_numbers))
        args = {
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            **payload_args(payload),
            "metadata": {
                "event_type": METADATA_TYPE,
                "event_payload": {"answer_id": self.answer_id, "post": number},
            },
        }

        async def attempt() -> Sent:
            if index in self._unsure:
                found = await self._landed(number)
                if found is not None:
                    ts, text = found
                    log.info("slack_post_found_after_ambiguous_failure", ts=ts, post=number)
                    return Sent(ts, payload if text == payload.text else UNKNOWN)
            try:
                data = await self.p.caller.call("chat.postMessage", self.posts, **args)
            except Transient as exc:
                if exc.ambiguous:
                    self._unsure.add(index)
                raise
            except SlackDeliveryError as exc:
                if exc.error not in BLOCK_ERRORS or not args.get("blocks"):
                    raise
                log.warning("slack_blocks_refused_sending_text_only", error=exc.error)
                del args["blocks"]  # the next attempt (and any retry) posts the text alone
                raise Transient(f"blocks refused: {exc.error}") from exc
            self.calls += 1
            return Sent(str(data["ts"]), payload)

        if reliable:
            sent = await self.p.caller.reliably("chat.postMessage", self.posts, attempt)
        else:
            sent = await attempt()
        self._numbered.pop(index, None)
        self._unsure.discard(index)
        return sent

    async def _landed(self, number: int) -> tuple[str, str] | None:
        """(ts, text) of this answer's post `number` if it is in the thread; extra copies of it
        are deleted. None when it is not there, or the thread cannot be read (then posting
        again risks a duplicate, which beats losing the answer). Raises Transient/RateLimited."""
        bucket = self.p.budgets.bucket(f"reads:{self.team_id}", READS_PER_SECOND, READ_BURST)
        copies: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(LOOKUP_PAGES):
            await self.p.caller.acquire(bucket, max_wait=math.inf)
            try:
                page = await self.p.caller.read(
                    "conversations.replies",
                    bucket,
                    channel=self.channel,
                    ts=self.thread_ts,
                    include_all_metadata="true",
                    limit=200,
                    **({"cursor": cursor} if cursor else {}),
                )
            except SlackDeliveryError as exc:
                log.warning("slack_post_lookup_failed", error=exc.error)
                return None
            self.calls += 1
            copies += [m for m in page.get("messages") or [] if self._is_post(m, number)]
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        if not copies:
            return None
        for extra in copies[1:]:
            await self._remove(Sent(str(extra["ts"]), UNKNOWN))
        return str(copies[0]["ts"]), str(copies[0].get("text") or "")

    def _is_post(self, message: object, number: int) -> bool:
        """`message` (from conversations.replies) is this answer's post `number`."""
        if not isinstance(message, dict):
            return False
        metadata = message.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("event_type") != METADATA_TYPE:
            return False
        names = metadata.get("event_payload")
        return isinstance(names, dict) and names == {"answer_id": self.answer_id, "post": number}


Stream = AnswerStream | NativeAnswerStream
