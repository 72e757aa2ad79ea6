"""Slack's native chat streaming (chat.startStream / appendStream / stopStream) for one answer.

On by default (POWABOT_NATIVE_STREAMING), in DMs and in channel threads (where Slack wants
`recipient_user_id` / `recipient_team_id`). Slack locks a stream to the content mode of its first
content, so this stream uses **chunks mode throughout**: answer text goes in `markdown_text`
chunks, progress in `task_update` chunks (one task card per delegation, merged by id) and, with
more than one specialist planned, a `plan_update` title over cards shown as a plan. Never the
`markdown_text` argument: mixing the two is refused (`streaming_mode_mismatch`).

Until there is something to show in the stream (a delegation, or answer text), the thread shows
Slack's own status line (`assistant.threads.setStatus`, `bot.slack.status`): no message, no
budget of the chat.* methods spent. The stream is started then; the plan/timeline display mode
is chosen at that moment (Slack only takes it at startStream).

Slack limits each streaming method separately, per workspace: appendStream is Tier 4,
startStream and stopStream Tier 2. Each gets a bucket of its own (about 10 % under Slack's
figure, like the other budgets). A stream that cannot be started at once (the start budget is
empty, a 429, a 5xx, or Slack refusing streaming here) is not waited for: the answer goes the
classic way (`AnswerStream`: first text posted, then edited), so the first words never queue
behind Tier 2.

Intermediate appends never wait in line: when the workspace append budget is empty, or Slack
answers 429 / `ratelimited`, the flusher sleeps until the next token (or for `Retry-After`), and
after a 5xx it backs off; the next append then carries everything that piled up meanwhile.
A task card Slack refuses (`invalid_chunks`, ...) turns the cards off for this answer; the
text carries on. Anything else Slack refuses outright (the stream expired, a method refused,
...) ends native streaming: the stream is stopped and the classic `AnswerStream` adopts the same
message and edits the whole answer into it, so nothing is lost and nothing shows twice. A stream
is also ended that way before Slack's own expiry (about 5 minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError
from bot.render import render_answer, status_text
from bot.render.answer import NATIVE_MAX_CHARS, answer_markdown
from bot.render.feedback import answer_actions, rateable
from bot.render.labels import AGENT_LABELS, agent_subject, seconds, shorten
from bot.render.safety import plain
from bot.render.sources import sources_markdown, task_sources
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
from bot.slack.status import ThreadStatus
from bot.state import AnswerState, Delegation, Phase

log = structlog.get_logger(__name__)

# The stream is gone (or was never really open): stopping it again is pointless.
NOT_STREAMING = "message_not_in_streaming_state"
# Refusals of a chunk's content: the cards are dropped, the text goes on without them.
CHUNK_ERRORS = frozenset({"invalid_chunks", "invalid_arguments", "invalid_blocks"})
MAX_APPEND = 11_000  # markdown_text is capped at 12,000 characters per call
APPENDS_PER_SECOND = 90 / 60  # Tier 4 ("100+ per minute"), per workspace
APPEND_BURST = 16.0
STARTS_PER_SECOND = 18 / 60  # Tier 2 ("20+ per minute"), per workspace
START_BURST = 3.0
STOPS_PER_SECOND = 18 / 60  # Tier 2 ("20+ per minute"), per workspace
STOP_BURST = 3.0
FIRST_TEXT_FACTOR = 0.25  # the first words' share of the interval between writes
MIN_WAIT = 0.05  # shortest pause after a refused intermediate append
HELD_WAIT = 5.0  # pause between looks while an operator alert holds intermediate writes
# Slack ends a stream left open about 5 minutes; ours are ended (and go classic) before that.
STREAM_MAX_AGE = 270.0
TITLE_CHARS = 150  # task card titles (Slack takes 256)
DETAIL_CHARS = 200
QUERY_CHARS = 80
# Card statuses by how a delegation ended (Powabase's `delegation_completed.status`).
DONE_STATUSES = frozenset({None, "", "completed", "complete", "success", "succeeded", "done"})

PostedHook = Callable[[str, bool], Awaitable[None]]


class ClassicStream(Protocol):
    """What native streaming needs of the classic stream it falls back to."""

    calls: int
    on_posted: PostedHook | None

    @property
    def channel_gone(self) -> bool: ...

    @property
    def reply_ts(self) -> str | None: ...

    @property
    def truncated(self) -> bool: ...

    async def start(self, state: AnswerState) -> str | None: ...

    def resume(self, state: AnswerState) -> None: ...

    def update(self) -> None: ...

    async def finish(self) -> None: ...

    async def amend(self) -> None: ...

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


def _knowledge_base(agent: str) -> str:
    """ "billing knowledge base" for the billing specialist; "knowledge base" otherwise."""
    label = AGENT_LABELS.get(agent)
    return f"{label.split()[0]} knowledge base" if label else "knowledge base"


def _doing(d: Delegation) -> str:
    """What a specialist is doing now, for its card's details."""
    if d.tool_calls:
        step = d.tool_calls[-1]
        doing = f"Searching the {_knowledge_base(d.agent)}"
        if step.query:
            doing += f" for “{shorten(step.query, QUERY_CHARS)}”"
        return doing + "…"
    if d.task:
        return f"Looking into “{shorten(d.task, QUERY_CHARS)}”…"
    return "Working on it…"


def task_card(card_id: str, d: Delegation | None, planned: str, *, ended: bool) -> dict[str, Any]:
    """The `task_update` chunk of one delegation (pending when it has not started yet)."""
    agent = d.agent if d is not None else planned
    chunk: dict[str, Any] = {
        "type": "task_update",
        "id": card_id,
        "title": plain(agent_subject(agent))[:TITLE_CHARS],
    }
    if d is None:
        chunk["status"] = "error" if ended else "pending"
        if ended:
            chunk["output"] = "Not asked in the end."
        return chunk
    searches = len(d.tool_calls)
    if d.completed_at is None and not ended:
        chunk["status"] = "in_progress"
        chunk["details"] = plain(_doing(d))[:DETAIL_CHARS]
    elif d.completed_at is not None and d.status in DONE_STATUSES:
        chunk["status"] = "complete"
        took = seconds(d.duration_s)
        done = f"Done in {took}" if took else "Done"
        if searches:
            done += f" ({searches} search{'es' if searches != 1 else ''})"
        chunk["output"] = done + "."
    else:
        chunk["status"] = "error"
        chunk["output"] = "Didn't finish."
    return chunk


def plan_title(state: AnswerState) -> str:
    n = max(len(state.planned), len(state.delegations))
    return f"Asking {n} specialists"


@dataclass(frozen=True)
class _Append:
    """One chat.appendStream call, and what it shows once Slack accepted it."""

    args: dict[str, Any]
    text: str
    cards: dict[str, dict[str, Any]]  # card id → the chunk Slack will then show


class NativeAnswerStream(ThreadExtras):
    """The same interface as `AnswerStream` (start / update / finish / amend), over chat
    streaming."""

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
        self.on_posted: PostedHook | None = None  # told the ts of the stream once it starts
        self._state = AnswerState()
        self._status = ThreadStatus(
            publisher.caller,
            publisher.budgets,
            team_id,
            channel,
            thread_ts,
            clock=publisher.clock,
        )
        self._streamed = ""  # the safe Markdown Slack accepted so far
        self._cards: dict[str, dict[str, Any]] = {}  # card id → the chunk Slack accepted
        self._cards_off = False  # Slack refused a card: text only from then on
        self._plan = False  # the stream shows its cards as a plan
        self._final = False
        self._finishing = asyncio.Event()  # wakes the flusher from any pause
        self._wake = asyncio.Event()  # ends the wait between writes: first words, or the end
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.orphaned = False  # finish() was cancelled while the flusher kept going
        self._last = 0.0
        self._opened_at = 0.0
        self._first_text = FirstText(publisher.clock)
        self._failures = 0  # transient failures of intermediate appends in a row
        self._streaming = False  # a stream was started and not yet known to be stopped
        self._classic: ClassicStream | None = None
        self._adopted = False  # `_classic` edits the streamed message (rather than its own)
        self._gone = False  # Slack said mid-answer that the bot cannot write here any more

    @property
    def reply_ts(self) -> str | None:
        """The ts of the answer's last message (where its feedback buttons are), if any."""
        if self._classic is not None:
            return self._classic.reply_ts
        return self.ts

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
    def streaming(self) -> bool:
        """A native stream is open and carries this answer (sources may still join it before
        `finish()` stops it)."""
        return self._streaming and self._classic is None

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

    async def start(self, state: AnswerState) -> str | None:
        """Show that the question was heard: the thread's status line (no message yet, so
        None), or, where a notice must be a message ("in line", "after your previous
        question") or Slack refuses the status, a classic placeholder (its ts).

        Raises SlackDeliveryError when the bot cannot write here (`channel_gone`) or its token
        is bad (`auth_failed`): the question should not be run then.
        """
        self._state = state
        if state.queued or state.after_previous:
            return await self._fall_back(state)
        if not await self._status.show(status_text(state), first=True):
            return await self._fall_back(state)
        self._flusher = self.p.spawn_flusher(self)
        return None

    def _hand_to_classic(self) -> ClassicStream:
        """The classic stream carries this answer from now on (nothing was streamed)."""
        classic = self.p.classic(self.team_id, self.channel, self.thread_ts)
        classic.on_posted = self.on_posted
        self._classic = classic
        return classic

    async def _fall_back(self, state: AnswerState) -> str | None:
        """Start classically: a placeholder message where a notice must be one."""
        return await self._hand_to_classic().start(state)

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
            if self._first_words_due():
                self._wake.set()  # a wait meant for a card update is too long for them

    async def finish(self) -> None:
        """Deliver the final answer for sure, even when `start()` failed.

        Returns only once Slack accepted the final text; raises SlackDeliveryError otherwise
        (an unexpected failure is logged and raised as one, "unexpected: <TypeName>").
        """
        await delivered(self._finish(), "chat.stopStream")

    async def amend(self) -> None:
        """After `finish()`: show what the state gained since (the sources). A stream carries
        them in its stop; a classic fallback edits them into its last message."""
        if self._classic is not None:
            await self._classic.amend()

    async def _finish(self) -> None:
        if self._classic is None and self._flusher is None:
            self._final = True
            log.warning("native_stream_never_opened", posting_instead=True)
            await self._post_fresh()
            return
        if self._classic is None:
            self._final = True
            self._finishing.set()
            self._wake.set()
            self._dirty.set()
        if self._flusher is not None:
            if not await outlive_flusher(self, self._flusher) and self._classic is None:
                await self._recover()
                return
        if self._classic is not None:
            await self._finish_classic()

    async def _recover(self) -> None:
        """After a crash of the flusher: stop the stream (if one was opened) and finish
        classically, or post anew if Slack still holds it as streaming."""
        if self.ts is None:
            await self._post_fresh()
            return
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
        fresh.on_posted = self.on_posted if self.ts is None else None
        self._classic, self._adopted = fresh, False
        try:
            ts = await fresh.start(self._state)
            if ts is not None and self.ts is None:  # start() posted it: announce it here
                await self._posted(ts, native=False)
            await fresh.finish()
        finally:
            self.calls += fresh.calls
            fresh.calls = 0

    # --- what the stream shows -------------------------------------------------------------

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

    def _cards_now(self, *, with_sources: bool = False) -> dict[str, dict[str, Any]]:
        """Every card as it should look now: one per delegation, planned ones pending."""
        state = self._state
        ended = state.finished
        cards: dict[str, dict[str, Any]] = {}
        count = max(len(state.planned), len(state.delegations))
        for i in range(count):
            d = state.delegations[i] if i < len(state.delegations) else None
            planned = state.planned[i] if i < len(state.planned) else ""
            card = task_card(f"task-{i + 1}", d, planned, ended=ended)
            cards[card["id"]] = card
        if with_sources and cards and state.sources:
            links = task_sources(state.sources)
            if links:  # on the last specialist's card: the answer rests on them together
                last = next(reversed(cards))
                cards[last] = {**cards[last], "sources": links}
        return cards

    def _changed_cards(self, *, with_sources: bool = False) -> dict[str, dict[str, Any]]:
        if self._cards_off:
            return {}
        now = self._cards_now(with_sources=with_sources)
        return {k: card for k, card in now.items() if self._cards.get(k) != card}

    def _worth_opening(self) -> bool:
        """Something to stream: a specialist to show, or the first words."""
        return bool(self._state.delegations or self._state.planned or self._text_to_append())

    def _next_append(self) -> _Append | None:
        """What the next appendStream call would send; nothing is recorded until it succeeds."""
        text = self._text_to_append()
        cards = self._changed_cards()
        if not text and not cards:
            return None
        chunks: list[dict[str, Any]] = list(cards.values())
        if text:
            chunks.append({"type": "markdown_text", "text": text})
        return _Append({"channel": self.channel, "ts": self.ts, "chunks": chunks}, text, cards)

    def _appended(self, append: _Append) -> None:
        self.calls += 1
        self._streamed += append.text
        if append.text:
            self._first_text.shown()
        self._cards.update(append.cards)
        self._last = self.p.clock()

    async def _pause(self, seconds: float) -> None:
        """Sleep for `seconds` (on the publisher's clock), or less if `finish()` is called."""
        await sleep_unless(self.p.sleep, seconds, self._finishing)

    # --- the flusher -------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._wait_for_turn()
            try:
                if self.ts is None:
                    if not (self._final or self._worth_opening()):
                        await self._show_status()
                        continue
                    if not await self._open():
                        return  # a classic stream carries the answer now
                    if not self._final:
                        continue
                if self._final:
                    await self._stop()
                    return
                if self.p.clock() - self._opened_at > STREAM_MAX_AGE:
                    log.info("native_stream_aged_out", age=self.p.clock() - self._opened_at)
                    await self._stop_quietly()
                    self._adopt_classic()
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

    def _first_words_due(self) -> bool:
        return not self._streamed.strip() and bool(self._state.text.strip())

    def _interval(self) -> float:
        """Seconds between writes; the first words follow a card update after a quarter of
        it (they matter most, and Slack tolerates short bursts)."""
        if self._first_words_due():
            return self.p.min_interval * FIRST_TEXT_FACTOR
        return self.p.min_interval

    async def _wait_for_turn(self) -> None:
        """Until the next write is due; cut short when the first words arrive (their
        interval is shorter) or the answer ends."""
        while not self._final:
            wait = self._last + self._interval() - self.p.clock()
            if wait <= 0:
                return
            self._wake.clear()
            await sleep_unless(self.p.sleep, wait, self._wake)
            if not self._wake.is_set():
                return

    async def _show_status(self) -> None:
        """Before the stream starts: progress on the thread's status line (best effort)."""
        text = status_text(self._state)
        if text and self._status.due(text):
            await self._status.show(text)
            self._last = self.p.clock()

    async def _open(self) -> bool:
        """Start the stream with everything there is to show; False when the answer went to
        a classic stream instead (no start token at once, 429, 5xx, streaming refused here)."""
        state = self._state
        if state.finished and not state.text.strip():
            return await self._go_classic("nothing_to_stream")  # a notice: one post
        if not await self.p.caller.acquire(self.starts, max_wait=0.0):
            # Many answers at once: waiting for a Tier-2 start would hold the first words
            # back for seconds. The classic post shows up at once.
            return await self._go_classic("native_start_budget_empty")
        self._plan = max(len(state.planned), len(state.delegations)) > 1
        cards = self._changed_cards()
        text = self._text_to_append()
        chunks: list[dict[str, Any]] = []
        if self._plan and not self._cards_off:
            chunks.append({"type": "plan_update", "title": plan_title(state)})
        chunks += cards.values()
        if text:
            chunks.append({"type": "markdown_text", "text": text})
        try:  # one try: a 429 or 5xx here would otherwise hold the first words for seconds
            data = await self.p.caller.call(
                "chat.startStream",
                self.starts,
                channel=self.channel,
                thread_ts=self.thread_ts,
                task_display_mode="plan" if self._plan else "timeline",
                chunks=chunks,
                **self._recipient(),
            )
        except (RateLimited, Transient) as exc:
            return await self._go_classic("native_start_unavailable", error=type(exc).__name__)
        except SlackDeliveryError as exc:
            if exc.channel_gone or exc.auth_failed:
                raise
            return await self._go_classic("native_streaming_refused", error=exc.error)
        self.ts = str(data["ts"])
        self._streaming = True
        self._opened_at = self.p.clock()
        self._appended(_Append({}, text, cards))
        await self._posted(self.ts)
        return True

    async def _go_classic(self, why: str, **fields: Any) -> bool:
        """The classic stream carries the answer from here; the thread's status shows
        already, so it goes straight to its first words (or the final notice)."""
        log.info(why, **fields)
        self._hand_to_classic().resume(self._state)
        return False

    async def _posted(self, ts: str, *, native: bool = True) -> None:
        if self.on_posted is None:
            return
        try:
            await self.on_posted(ts, native)
        except Exception as exc:  # the answer goes on; only its takeover record is missing
            log.error("reply_record_failed", error_type=type(exc).__name__, error=str(exc))

    async def _try_append(self) -> float | None:
        """One intermediate append if the budget allows; else seconds to wait before retrying.

        Refusals that merely mean "not now" (budget, 429, 5xx) never raise; Slack refusing the
        call itself raises SlackDeliveryError (a refused card turns the cards off instead).
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
        except SlackDeliveryError as exc:
            if not self._cards_refused(exc, append):
                raise
            return MIN_WAIT
        self._failures = 0
        self._appended(append)
        return None

    def _cards_refused(self, exc: SlackDeliveryError, append: _Append) -> bool:
        """Slack refused a call that carried cards for their content: drop the cards (the
        text goes on alone). False when the refusal is about something else."""
        if exc.error not in CHUNK_ERRORS or not append.cards or self._cards_off:
            return False
        log.warning("native_task_cards_refused", method=exc.method, error=exc.error)
        self._cards_off = True
        return True

    async def _append_reliably(self, append: _Append) -> None:
        try:
            await self.p.caller.call_reliably("chat.appendStream", self.appends, **append.args)
        except SlackDeliveryError as exc:
            if not self._cards_refused(exc, append):
                raise
            return  # sent again without cards by the caller's loop
        self._appended(append)

    async def _stop(self) -> None:
        """Append whatever is left, then stop the stream with the finished cards (and their
        sources), any closing notice and the sources line."""
        state = self._state
        while (append := self._next_append()) is not None:  # long final text: 11k pieces
            await self._append_reliably(append)
        full = safe_markdown(state.text)
        exact = self._streamed.rstrip() == full.rstrip()
        tail = [part for part in (self._closing_text(), self._sources_text()) if part]
        text = "\n\n".join(tail)
        if text and self._streamed.strip():
            text = f"\n\n{text}"
        buttons = rateable(state)  # feedback and "New conversation" under the answer
        while True:
            cards = self._changed_cards(with_sources=True)
            chunks: list[dict[str, Any]] = list(cards.values())
            if text:
                chunks.append({"type": "markdown_text", "text": text})
            args: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
            if chunks:
                args["chunks"] = chunks
            if buttons:
                args["blocks"] = [answer_actions()]
            try:
                await self.p.caller.call_reliably("chat.stopStream", self.stops, **args)
            except SlackDeliveryError as exc:
                if self._cards_refused(exc, _Append(args, text, cards)):
                    continue  # once more, text only
                if buttons and exc.error in CHUNK_ERRORS:  # the answer matters more
                    log.warning("native_feedback_buttons_refused", error=exc.error)
                    buttons = False
                    continue
                raise
            break
        self.calls += 1
        self._streaming = False
        self._streamed += text
        self._cards.update(cards)
        state.sources_shown = bool(self._sources_text())
        if not exact and full.strip():
            # The authoritative final text differs from what streamed: show the final one.
            self._adopt_classic()

    def _closing_text(self) -> str:
        """What ends the message besides the answer: the failure notice (or "Stopped."), or
        the "I couldn't answer" text when the run ended with no answer at all."""
        state = self._state
        if state.phase is Phase.FAILED or (state.phase is Phase.DONE and not state.text.strip()):
            return render_answer(state)[-1].text.rsplit("\n\n", 1)[-1]
        return ""

    def _sources_text(self) -> str:
        state = self._state
        if state.phase is not Phase.DONE or not state.sources:
            return ""
        return sources_markdown(state.sources)

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
