"""Slack's native chat streaming (chat.startStream / appendStream / stopStream) for one answer.

Used for DMs when POWABOT_NATIVE_STREAMING is on. What the coordinator is doing shows as task
cards (`task_update` chunks); the answer text is appended as Markdown, which Slack renders itself.
Appends do not spend the Tier-3 `chat.update` budget. When Slack refuses streaming for this
workspace or channel, or the stream expires, the answer falls back to post + update without losing
anything: the classic `AnswerStream` takes over the same state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from bot.errors import SlackDeliveryError
from bot.render import render_answer, status_text
from bot.render.safety import plain
from bot.slack.budget import TokenBucket
from bot.state import AnswerState, Phase

if TYPE_CHECKING:
    from bot.slack.publisher import AnswerStream, Payload, Publisher

log = structlog.get_logger(__name__)

# Refusals after which the classic post + update path takes over.
FALLBACK_ERRORS = frozenset(
    {
        "channel_type_not_supported",
        "unknown_method",
        "not_allowed_token_type",
        "feature_not_enabled",
        "method_deprecated",
        "message_not_in_streaming_state",
        "missing_scope",
        "invalid_arguments",
        "not_authed",
        "streaming_state_conflict",
    }
)
MAX_APPEND = 11_000  # markdown_text is capped at 12,000 characters per call
APPENDS_PER_SECOND = 100 / 60  # Tier 4, per workspace
APPEND_BURST = 20.0


def safe_markdown(text: str) -> str:
    """Model Markdown with mention syntax broken up: it can never ping anyone."""
    return plain(text)


class NativeAnswerStream:
    """The same interface as `AnswerStream` (start / update / finish), over chat streaming."""

    def __init__(
        self,
        publisher: Publisher,
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
        self._streamed = ""  # the safe Markdown already appended
        self._tasks: dict[str, str] = {}  # task id → status already shown
        self._task_title = ""
        self._final = False
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._last = 0.0
        self._classic: AnswerStream | None = None

    @property
    def appends(self) -> TokenBucket:
        return self.p.budgets.bucket(f"append:{self.team_id}", APPENDS_PER_SECOND, APPEND_BURST)

    def _recipient(self) -> dict[str, Any]:
        if self.in_dm:
            return {}
        return {"recipient_user_id": self.user_id, "recipient_team_id": self.team_id}

    async def start(self, state: AnswerState) -> str:
        self._state = state
        title = status_text(state)
        try:
            data = await self.p.call_reliably(
                "chat.startStream",
                self.appends,
                channel=self.channel,
                thread_ts=self.thread_ts,
                chunks=[self._task("status", title, "in_progress")],
                **self._recipient(),
            )
        except SlackDeliveryError as exc:
            log.info("native_streaming_refused", error=exc.error)
            return await self._fall_back(state)
        self.calls += 1
        self.ts = str(data["ts"])
        self._task_title = title
        self._tasks["status"] = "in_progress"
        self._last = time.monotonic()
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"native-{self.thread_ts}")
        return self.ts

    async def _fall_back(self, state: AnswerState) -> str:
        from bot.slack.publisher import AnswerStream

        self._classic = AnswerStream(self.p, self.team_id, self.channel, self.thread_ts)
        return await self._classic.start(state)

    def update(self) -> None:
        if self._classic is not None:
            self._classic.update()
        elif not self._final:
            self._dirty.set()

    async def finish(self) -> None:
        if self._classic is None:
            self._final = True
            self._dirty.set()
            if self._flusher is not None:
                await self._flusher
        if self._classic is not None:
            await self._classic.finish()
            self.calls += self._classic.calls
            self._classic.calls = 0

    async def post_below(self, payloads: Sequence[Payload]) -> None:
        from bot.slack.publisher import _payload_args

        for payload in payloads:
            await self.p.call_reliably(
                "chat.postMessage",
                self.p.budgets.posts(self.channel),
                channel=self.channel,
                thread_ts=self.thread_ts,
                **_payload_args(payload),
            )
            self.calls += 1

    @staticmethod
    def _task(task_id: str, title: str, status: str) -> dict[str, Any]:
        return {"type": "task_update", "id": task_id, "title": plain(title)[:150], "status": status}

    def _text_to_append(self) -> str:
        """New safe Markdown since the last append, held back to a word boundary mid-stream."""
        full = safe_markdown(self._state.text)
        if not full.startswith(self._streamed):
            return ""  # the final text rewrote what was streamed; stop() settles it
        new = full[len(self._streamed) :]
        if not self._state.finished:
            cut = max(new.rfind(" "), new.rfind("\n"))
            new = new[: cut + 1] if cut >= 0 else ""
        return new[:MAX_APPEND]

    def _chunks(self) -> list[dict[str, Any]]:
        state = self._state
        chunks: list[dict[str, Any]] = []
        if state.phase is Phase.WORKING:
            title = status_text(state)
            if title != self._task_title:
                self._task_title = title
                chunks.append(self._task("status", title, "in_progress"))
        elif self._tasks.get("status") == "in_progress":
            done = "error" if state.phase is Phase.FAILED and not state.text else "complete"
            names = ", ".join(dict.fromkeys(d.agent for d in state.delegations))
            chunks.append(self._task("status", f"Asked {names}" if names else "Done", done))
            self._tasks["status"] = done
        return chunks

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            wait = self._last + self.p.min_interval - time.monotonic()
            if wait > 0 and not self._final:
                await asyncio.sleep(wait)
            final = self._final
            try:
                if final:
                    await self._stop()
                    return
                await self._append(reliable=False)
            except SlackDeliveryError as exc:
                if exc.error not in FALLBACK_ERRORS:
                    raise
                log.info("native_stream_lost", error=exc.error)
                await self._adopt_classic()
                return
            if self._final:
                self._dirty.set()

    async def _append(self, *, reliable: bool) -> None:
        text = self._text_to_append()
        chunks = self._chunks()
        if not text and not chunks:
            return
        args: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
        if chunks:
            if text:
                chunks.append({"type": "markdown_text", "text": text})
            args["chunks"] = chunks
        else:
            args["markdown_text"] = text
        if reliable:
            await self.p.call_reliably("chat.appendStream", self.appends, **args)
        elif not self.appends.try_take():
            self._dirty.set()
            return
        else:
            from bot.slack.publisher import _RateLimited, _Transient

            try:
                await self.p.call("chat.appendStream", self.appends, **args)
            except (_RateLimited, _Transient):
                self._dirty.set()
                return
        self.calls += 1
        self._streamed += text
        self._last = time.monotonic()

    async def _stop(self) -> None:
        state = self._state
        await self._append(reliable=True)
        rest = self._text_to_append()
        while rest:  # a very long final text: keep appending in 11k pieces
            await self._append(reliable=True)
            rest = self._text_to_append()
        exact = self._streamed == safe_markdown(state.text)
        notice = ""
        if state.phase is Phase.FAILED:
            notice = render_answer(state)[-1].text.rsplit("\n\n", 1)[-1]
        args: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
        if notice:
            args["markdown_text"] = "\n\n" + notice
        await self.p.call_reliably("chat.stopStream", self.appends, **args)
        self.calls += 1
        if not exact and state.text:
            # The authoritative final text differs from what streamed: show the final one.
            await self._adopt_classic()

    async def _adopt_classic(self) -> None:
        """Carry on with chat.update on the same message; `finish()` completes it there."""
        from bot.slack.publisher import AnswerStream

        assert self.ts is not None
        self._classic = AnswerStream.adopt(
            self.p, self.team_id, self.channel, self.thread_ts, ts=self.ts, state=self._state
        )
