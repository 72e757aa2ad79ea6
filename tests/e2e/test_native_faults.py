"""Native chat streaming under Slack faults: budget refusals, 429s, 5xx, refused methods.

Each test drives one `NativeAnswerStream` through the real `Publisher` and slack_sdk client against
the Slack stand-in over a real socket, then checks what the user ends up seeing and how many calls
(or budget checks) it took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.render import render_answer, status_text
from bot.render.answer import EMPTY_ANSWER
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.native import RETRY_BASE, NativeAnswerStream
from bot.slack.publisher import Publisher
from bot.state import Activity, ActivityKind, AnswerState, Phase
from sandbox.slack import ApiCall, SlackStandin, StoredMessage

ALICE = "U0ALICE"
ANSWER = "The refund window for an annual Pro plan is 30 days from the purchase date."


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
    """Budgets whose named buckets (chat.appendStream) count refusals; rate/capacity overridable."""

    other_rate: float | None = None
    other_capacity: float | None = None
    counting: dict[str, CountingBucket] = field(default_factory=dict)

    def bucket(self, name: str, rate: float, capacity: float) -> TokenBucket:
        found = self.counting.get(name)
        if found is None:
            found = CountingBucket(self.other_rate or rate, self.other_capacity or capacity)
            self.counting[name] = found
        return found

    @property
    def appends(self) -> CountingBucket:
        (bucket,) = self.counting.values()
        return bucket


@dataclass
class Answer:
    slack: SlackStandin
    stream: NativeAnswerStream
    state: AnswerState
    channel: str
    thread_ts: str

    @property
    def message(self) -> StoredMessage:
        assert self.stream.ts is not None
        return self.slack.message(self.channel, self.stream.ts)

    def replies(self) -> list[StoredMessage]:
        return [m for m in self.slack.thread(self.channel, self.thread_ts) if m.is_bot]

    async def say(self, text: str) -> None:
        """Answer text arrives mid-stream; wait until Slack shows it (held back to a word)."""
        self.state.text = text
        self.state.phase = Phase.STREAMING
        self.state.activity = None
        self.stream.update()
        shown = text[: max(text.rfind(" "), text.rfind("\n")) + 1].rstrip()
        await self.slack.wait_for(lambda: self.message.text.rstrip() == shown, timeout=5)

    async def done(self, text: str) -> None:
        self.state.text = text
        self.state.phase = Phase.DONE
        self.state.activity = None
        self.stream.update()
        await self.stream.finish()


async def open_answer(slack: SlackStandin, channel: str, budgets: Budgets | None = None) -> Answer:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, budgets or Budgets(), min_interval=0.01, native_streaming=True)
    question = "How long is the refund window?"
    asked = await slack.user_says(user=ALICE, text=question, channel=channel)
    stream = publisher.open(
        slack.workspace.team_id, channel, asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    state = AnswerState(question=question)
    state.phase = Phase.WORKING
    state.activity = Activity(ActivityKind.THINKING)
    await stream.start(state)
    return Answer(slack, stream, state, channel, asked.ts)


def appends(slack: SlackStandin) -> list[ApiCall]:
    return slack.calls_to("chat.appendStream")


def ok(calls: list[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if c.error is None]


def appended_texts(call: ApiCall) -> list[str]:
    texts = [str(call.args.get("markdown_text") or "")]
    texts += [str(c.get("text", "")) for c in call.args.get("chunks") or []]
    return [t for t in texts if t]


def expected(state: AnswerState) -> str:
    (message,) = render_answer(state)
    return message.text


async def test_an_empty_append_budget_is_waited_for_not_spun_on(slack: SlackStandin) -> None:
    """With the workspace append budget empty, the stream waits for the next token (no spin)."""
    budgets = SpyBudgets(other_rate=5.0, other_capacity=1.0)  # one append per 0.2 s, no burst
    answer = await open_answer(slack, "D0BUDGET", budgets)
    words = ANSWER.split(" ")
    for end in (4, 8, 12):
        await answer.say(" ".join(words[:end]) + " ")
    await answer.done(ANSWER)
    bucket = budgets.appends
    assert bucket.granted >= 3
    # Each refusal is followed by a wait until the next token, so refusals stay in step with the
    # grants; a loop that retries at once makes thousands of refused checks per window.
    assert bucket.refused <= 2 * bucket.granted + 2
    assert answer.message.text == ANSWER
    assert slack.calls_to("chat.update") == []


async def test_a_429_on_append_is_waited_out_without_spinning(slack: SlackStandin) -> None:
    """A 429 with Retry-After pauses appends for that long; the budget is not polled meanwhile."""
    budgets = SpyBudgets()
    answer = await open_answer(slack, "D0RL429", budgets)
    slack.inject("chat.appendStream", status=429, headers={"Retry-After": "1"}, times=1)
    await answer.say("The refund window for an annual Pro plan ")
    await answer.done(ANSWER)
    assert [c.status for c in appends(slack)].count(429) == 1
    assert budgets.appends.refused <= 3  # the paused second, checked once or twice, not in a loop
    assert answer.message.text == ANSWER
    assert slack.calls_to("chat.update") == []


async def test_a_status_card_refused_by_a_ratelimit_is_sent_again(slack: SlackStandin) -> None:
    """A task_update lost to `ratelimited` is not recorded as shown: the retry carries it."""
    answer = await open_answer(slack, "D0CARD", SpyBudgets())
    slack.inject("chat.appendStream", body={"ok": False, "error": "ratelimited"}, times=1)
    answer.state.activity = Activity(ActivityKind.DELEGATING, agent="billing")
    title = status_text(answer.state)
    answer.stream.update()
    await slack.wait_for(lambda: bool(ok(appends(slack))), timeout=5)
    first_ok = ok(appends(slack))[0]
    assert [c.get("title") for c in first_ok.args.get("chunks", [])] == [title]
    await answer.done(ANSWER)
    assert any(c.get("title") == title for c in answer.message.chunks)


async def test_transient_append_errors_are_retried_after_a_backoff(slack: SlackStandin) -> None:
    """Two 503s on appendStream are retried with a pause in between, and no fallback happens."""
    answer = await open_answer(slack, "D0FLAKY")
    slack.inject("chat.appendStream", status=503, times=2)
    await answer.say("The refund window for an annual Pro plan ")
    await answer.done(ANSWER)
    failed = [c for c in appends(slack) if c.status == 503]
    assert len(failed) == 2
    # A lower bound only (a backoff can be longer, never shorter), so this cannot flake.
    assert failed[1].t - failed[0].t >= RETRY_BASE * 0.9
    assert answer.message.text == ANSWER
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("error", ["not_allowed", "method_not_supported_for_channel_type"])
async def test_a_refused_append_mid_answer_falls_back_to_editing_the_same_message(
    slack: SlackStandin, error: str
) -> None:
    """appendStream refused mid-answer: the stream is stopped, then edited to the full answer."""
    answer = await open_answer(slack, "D0REFUSE")
    slack.inject("chat.appendStream", body={"ok": False, "error": error}, times=50)
    answer.state.text = "The refund window for an annual Pro plan "
    answer.state.phase = Phase.STREAMING
    answer.stream.update()
    await slack.wait_for(lambda: bool(slack.calls_to("chat.update")), timeout=5)
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.ts == answer.stream.ts
    assert reply.text == expected(answer.state)
    assert reply.stream_state == "stopped"
    methods = [c.method for c in slack.calls]
    assert methods.index("chat.stopStream") < methods.index("chat.update")
    assert slack.calls_to("chat.postMessage") == []


async def test_a_refused_final_append_stops_the_stream_and_edits_in_the_answer(
    slack: SlackStandin,
) -> None:
    """appendStream refused for the final text: no message is left streaming or half-written."""
    answer = await open_answer(slack, "D0REFUSE2")
    slack.inject("chat.appendStream", body={"ok": False, "error": "not_allowed"}, times=50)
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.stream_state == "stopped"
    assert reply.text == expected(answer.state)


async def test_an_unstoppable_stream_still_gets_the_answer_to_the_user(
    slack: SlackStandin,
) -> None:
    """stopStream refused, so the message cannot be edited: the answer is posted in the thread."""
    answer = await open_answer(slack, "D0NOSTOP")
    slack.inject("chat.stopStream", body={"ok": False, "error": "not_allowed"}, times=50)
    await answer.done(ANSWER)
    assert answer.replies()[-1].text == expected(answer.state)


async def test_an_empty_final_answer_still_shows_the_empty_notice(slack: SlackStandin) -> None:
    """A run that completes with no text ends the stream with the 'couldn't answer' notice."""
    answer = await open_answer(slack, "D0EMPTY")
    await answer.done("")
    (reply,) = answer.replies()
    assert reply.text.strip() == EMPTY_ANSWER
    assert reply.stream_state == "stopped"
    assert slack.calls_to("chat.update") == []


@pytest.mark.parametrize(
    ("streamed", "final"),
    [(ANSWER + "\n", ANSWER), (ANSWER + " ", ANSWER + "\n")],
    ids=["final-drops-newline", "final-swaps-space-for-newline"],
)
async def test_a_trailing_whitespace_difference_costs_no_extra_call(
    slack: SlackStandin, streamed: str, final: str
) -> None:
    """Final text equal to the streamed text up to trailing whitespace: no edit, no blank append."""
    answer = await open_answer(slack, "D0TRAIL")
    await answer.say(streamed)
    await answer.done(final)
    assert slack.calls_to("chat.update") == []
    assert all(t.strip() for c in appends(slack) for t in appended_texts(c))
    assert answer.message.text.rstrip() == final.rstrip()
    assert answer.message.stream_state == "stopped"
