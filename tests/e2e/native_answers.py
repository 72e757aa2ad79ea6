"""One native-streamed answer driven through the real `Publisher` and slack_sdk client against
the Slack stand-in over a real socket, and what the tests read of it.

`start()` shows the thread's status and posts nothing: the stream opens once there is something
to stream (a delegation's task card, or answer text). `Answer.message` is the stream's message
(after it opened); `Answer.replies()` is every bot message in the thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.powabase.events import (
    DelegationCompletedEvent,
    DelegationStartedEvent,
    ToolCallEvent,
)
from bot.render import render_answer
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.calls import Clock
from bot.slack.native import NativeAnswerStream
from bot.slack.publisher import Publisher
from bot.state import Activity, ActivityKind, AnswerState, Phase
from sandbox.slack import ApiCall, SlackStandin, StoredMessage

ALICE = "U0ALICE"
ANSWER = "The refund window for an annual Pro plan is 30 days from the purchase date."
QUESTION = "How long is the refund window?"


class CountingBucket(TokenBucket):
    """A real token bucket that also counts how often `try_take` said yes and no."""

    def __init__(self, rate: float, capacity: float) -> None:
        super().__init__(rate, capacity)
        self.granted = 0
        self.refused = 0

    def try_take(self, reserve: float = 0.0) -> bool:
        taken = super().try_take(reserve)
        if taken:
            self.granted += 1
        else:
            self.refused += 1
        return taken


@dataclass
class SpyBudgets(Budgets):
    """Budgets whose named buckets (chat.*Stream, setStatus) count refusals.

    The append bucket's rate and capacity can be overridden; `speedup` refills every named
    bucket that many times faster (bursts unchanged), to match a stand-in sped up alike.
    """

    append_rate: float | None = None
    append_capacity: float | None = None
    speedup: float = 1.0
    counting: dict[str, CountingBucket] = field(default_factory=dict)

    def bucket(self, name: str, rate: float, capacity: float) -> TokenBucket:
        found = self.counting.get(name)
        if found is None:
            if name.startswith("append:"):
                rate = self.append_rate or rate
                capacity = self.append_capacity or capacity
            found = CountingBucket(rate * self.speedup, capacity)
            self.counting[name] = found
        return found

    @property
    def appends(self) -> CountingBucket:
        (bucket,) = [b for name, b in self.counting.items() if name.startswith("append:")]
        return bucket


@dataclass
class Answer:
    slack: SlackStandin
    stream: NativeAnswerStream
    state: AnswerState
    channel: str
    thread_ts: str
    delegations: int = 0

    @property
    def message(self) -> StoredMessage:
        """The stream's message (the stream must have opened)."""
        assert self.stream.ts is not None, "the native stream has not started"
        return self.slack.message(self.channel, self.stream.ts)

    def shows(self, text: str) -> bool:
        """The stream opened and its message shows `text` (trailing whitespace aside)."""
        return self.stream.ts is not None and self.message.text.rstrip() == text.rstrip()

    def replies(self) -> list[StoredMessage]:
        return [m for m in self.slack.thread(self.channel, self.thread_ts) if m.is_bot]

    def tasks(self) -> dict[str, dict[str, Any]]:
        """The stream's task cards as they stand (merged by id); {} before it opened."""
        return self.message.tasks if self.stream.ts is not None else {}

    async def say(self, text: str) -> None:
        """Answer text arrives mid-stream; wait until Slack shows it (held back to a word)."""
        self.write(text)
        shown = text[: max(text.rfind(" "), text.rfind("\n")) + 1].rstrip()
        await self.slack.wait_for(lambda: self.shows(shown), timeout=5)

    def write(self, text: str) -> None:
        """Answer text arrives mid-stream (without waiting for Slack)."""
        self.state.text = text
        self.state.phase = Phase.STREAMING
        self.state.activity = None
        self.stream.update()

    def plan(self, *agents: str, at: float = 100.0) -> None:
        """The coordinator's step names several specialists at once (its delegate_to_* calls)."""
        for i, agent in enumerate(agents, start=1):
            self.state.apply(ToolCallEvent(tool_name=f"delegate_to_{agent}", call_id=f"p{i}"), at)
        self.stream.update()

    def delegate(
        self,
        agent: str = "billing-agent",
        query: str = "refund window",
        *,
        at: float = 100.0,
        planned: bool = False,
    ) -> int:
        """The coordinator delegates to `agent` (already `planned`, or with its own tool call
        now), which starts a knowledge-base search for `query`; returns the delegation's
        number (its card is `task-<number>`)."""
        self.delegations += 1
        n = self.delegations
        if not planned:
            call = ToolCallEvent(tool_name=f"delegate_to_{agent}", call_id=f"call{n}")
            self.state.apply(call, at)
        self.state.apply(
            DelegationStartedEvent(
                agent=agent, task=f"Answer the {agent} question", child_execution_id=f"exec{n}"
            ),
            at,
        )
        self.state.apply(
            ToolCallEvent(
                tool_name="knowledge_search", arguments={"query": query}, call_id=f"search{n}"
            ),
            at,
        )
        self.stream.update()
        return n

    def delegation_done(
        self, n: int, agent: str = "billing-agent", *, at: float, status: str = "completed"
    ) -> None:
        self.state.apply(
            DelegationCompletedEvent(agent=agent, child_execution_id=f"exec{n}", status=status), at
        )
        self.stream.update()

    async def done(self, text: str) -> None:
        self.state.text = text
        self.state.phase = Phase.DONE
        self.state.activity = None
        self.stream.update()
        await self.stream.finish()


def publisher_for(
    slack: SlackStandin, budgets: Budgets | None = None, *, clock: Clock | None = None
) -> Publisher:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    if clock is None:
        return Publisher(client, budgets or Budgets(), min_interval=0.01, native_streaming=True)
    return Publisher(
        client,
        budgets or Budgets(clock=clock),
        min_interval=0.01,
        native_streaming=True,
        clock=clock,
    )


async def open_answer(
    slack: SlackStandin,
    channel: str,
    budgets: Budgets | None = None,
    *,
    publisher: Publisher | None = None,
    channel_type: str = "im",
) -> Answer:
    """A question in `channel` (a DM unless told), and the native stream answering it, started
    (its status shows; no message yet)."""
    publisher = publisher or publisher_for(slack, budgets)
    if channel_type == "im":
        asked = await slack.user_says(user=ALICE, text=QUESTION, channel=channel)
    else:
        asked = await slack.user_says(
            user=ALICE, text=QUESTION, channel=channel, channel_type=channel_type, mention=True
        )
    stream = publisher.open(
        slack.workspace.team_id, channel, asked.ts, user_id=ALICE, channel_type=channel_type
    )
    assert isinstance(stream, NativeAnswerStream)
    state = AnswerState(question=QUESTION)
    state.phase = Phase.WORKING
    state.activity = Activity(ActivityKind.THINKING)
    assert await stream.start(state) is None  # the status line, no message
    return Answer(slack, stream, state, channel, asked.ts)


def appends(slack: SlackStandin) -> list[ApiCall]:
    return slack.calls_to("chat.appendStream")


def stream_calls(slack: SlackStandin) -> list[ApiCall]:
    return [c for c in slack.calls if c.method.startswith("chat.") and "Stream" in c.method]


def ok(calls: list[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if c.error is None]


def chunks_of(call: ApiCall, kind: str) -> list[dict[str, Any]]:
    return [c for c in call.args.get("chunks") or [] if c.get("type") == kind]


def appended_texts(call: ApiCall) -> list[str]:
    texts = [str(call.args.get("markdown_text") or "")]
    texts += [str(c.get("text", "")) for c in chunks_of(call, "markdown_text")]
    return [t for t in texts if t]


def expected(state: AnswerState) -> str:
    """The classic render of `state` (one message): what an adopted or fallback message shows."""
    (message,) = render_answer(state)
    return message.text
