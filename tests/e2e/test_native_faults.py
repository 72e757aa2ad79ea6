"""Native chat streaming under Slack faults: budget refusals, 429s, 5xx, refused methods.

Each test drives one `NativeAnswerStream` through the real `Publisher` and slack_sdk client against
the Slack stand-in over a real socket, then checks what the user ends up seeing and how many calls
(or budget checks) it took.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.render import render_answer, status_text
from bot.render.answer import EMPTY_ANSWER
from bot.slack.budget import Budgets, TokenBucket
from bot.slack.calls import BACKOFF
from bot.slack.native import START_BURST, NativeAnswerStream
from bot.slack.publisher import Publisher
from bot.state import Activity, ActivityKind, AnswerState, ErrorKind, Phase
from sandbox.slack import ApiCall, RateLimits, SlackStandin, StoredMessage
from tests.conftest import running_bot

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
    """Budgets whose named buckets (chat.*Stream) count refusals.

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
    budgets = SpyBudgets(append_rate=5.0, append_capacity=1.0)  # one append per 0.2 s, no burst
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
    # A lower bound only: the jittered first backoff is at least half its nominal length.
    assert failed[1].t - failed[0].t >= BACKOFF * 0.5 * 0.9
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


async def test_answers_finishing_together_do_not_hold_up_other_answers_appends() -> None:
    """Answers finishing at once queue on their own stopStream (Tier 2) budget: Slack never
    answers 429, and an answer still streaming keeps getting its text out meanwhile."""
    speedup = 10.0  # Slack's limits and the bot's budgets both run ten times faster
    tiers = RateLimits()
    limits = RateLimits(
        append_per_minute_per_workspace=(tiers.append_per_minute_per_workspace or 0) * speedup,
        start_per_minute_per_workspace=(tiers.start_per_minute_per_workspace or 0) * speedup,
        stop_per_minute_per_workspace=(tiers.stop_per_minute_per_workspace or 0) * speedup,
    )
    budgets = SpyBudgets(speedup=speedup)
    async with SlackStandin(rate_limits=limits) as slack:

        def start_slot_free() -> bool:  # else the answer would open as a classic message
            return all(b.level >= 1 for n, b in budgets.counting.items() if n.startswith("start:"))

        # More answers finish together than Slack's stopStream burst allows at once.
        finishing = []
        for i in range(tiers.stop_burst + 1):
            await slack.wait_for(start_slot_free, timeout=5)
            finishing.append(await open_answer(slack, f"D0DONE{i}", budgets))
        await slack.wait_for(start_slot_free, timeout=5)
        streaming = await open_answer(slack, "D0STILL", budgets)
        for answer in [*finishing, streaming]:
            await answer.say("The refund window for an annual Pro plan ")
        done = [asyncio.create_task(answer.done(ANSWER)) for answer in finishing]
        await slack.wait_for(lambda: len(slack.calls_to("chat.stopStream")) >= 2, timeout=5)
        await streaming.say(ANSWER + " ")
        appended = ok(appends(slack))[-1]
        await asyncio.gather(*done)
        await streaming.done(ANSWER)

        assert slack.ratelimited_count == 0
        assert [c.status for c in slack.calls if c.status != 200] == []
        assert appended.args["channel"] == "D0STILL"
        # The streaming answer's text went out while some answers still waited to stop.
        stops = slack.calls_to("chat.stopStream")
        finishing_stops = [c for c in stops if c.args["channel"] != "D0STILL"]
        assert len(finishing_stops) == len(finishing)
        assert appended.t < finishing_stops[-1].t
        for answer in [*finishing, streaming]:
            assert answer.message.text.rstrip() == ANSWER
            assert answer.message.stream_state == "stopped"
        assert slack.calls_to("chat.update") == []


async def test_a_start_without_a_stream_still_posts_the_final_answer(slack: SlackStandin) -> None:
    """startStream answering ok without a ts leaves no stream; finish() still posts the answer."""
    slack.inject("chat.startStream", body={"ok": True})
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, Budgets(), min_interval=0.01, native_streaming=True)
    question = "How long is the refund window?"
    asked = await slack.user_says(user=ALICE, text=question, channel="D0BAD")
    stream = publisher.open(
        slack.workspace.team_id, "D0BAD", asked.ts, user_id=ALICE, channel_type="im"
    )
    state = AnswerState(question=question)
    state.phase = Phase.WORKING
    with contextlib.suppress(Exception):  # the conversation logs a failed start and answers on
        await stream.start(state)
    assert stream.ts is None
    state.text, state.phase = ANSWER, Phase.DONE
    stream.update()
    await stream.finish()
    replies = [m for m in slack.thread("D0BAD", asked.ts) if m.is_bot]
    assert [m.text for m in replies] == [expected(state)]
    assert all(m.stream_state != "streaming" for m in replies)


async def test_a_dm_whose_stream_never_opened_still_gets_its_answer(
    slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """Through the whole bot: a malformed startStream answer still ends with the reply in the DM."""
    slack.inject("chat.startStream", body={"ok": True})
    async with running_bot(slack, powabase, tmp_path, POWABOT_NATIVE_STREAMING=True) as bot:
        before = bot.answerer.finished
        asked = await slack.user_says(
            user=ALICE, text="What is the refund window for an annual Pro plan?", channel="D0BOT"
        )
        await slack.wait_for(lambda: bot.answerer.finished > before, timeout=20)
    replies = [m for m in slack.thread("D0BOT", asked.ts) if m.is_bot]
    answer_words = [w for w in powabase.runs[-1].answer.split() if w.isalpha()][:20]
    assert answer_words and replies
    assert all(w in replies[0].text for w in answer_words)


async def test_a_burst_of_dms_beyond_the_stream_budget_gets_placeholders_at_once(
    slack: SlackStandin,
) -> None:
    """More DMs at once than startStream's burst: the rest open as classic messages right away
    instead of queueing for a stream slot, and every DM shows a reply."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    publisher = Publisher(client, Budgets(), min_interval=0.01, native_streaming=True)
    asked = [
        await slack.user_says(user=ALICE, text="Refund window?", channel=f"D0BURST{i}")
        for i in range(6)
    ]
    streams = [
        publisher.open(slack.workspace.team_id, a.channel, a.ts, user_id=ALICE, channel_type="im")
        for a in asked
    ]
    await asyncio.gather(*(s.start(AnswerState(question="Refund window?")) for s in streams))
    for a in asked:
        assert [m for m in slack.thread(a.channel, a.ts) if m.is_bot], a.channel
    started = len(slack.calls_to("chat.startStream"))
    assert started == int(START_BURST)  # the rest are classic posts
    assert len(slack.calls_to("chat.postMessage")) == 6 - started
    for s in streams:
        await s.finish()


async def test_a_rate_limited_start_opens_a_classic_message_at_once(slack: SlackStandin) -> None:
    """startStream answering 429 is not waited out: the placeholder is posted classically."""
    slack.inject("chat.startStream", status=429, headers={"Retry-After": "30"})
    answer = await open_answer(slack, "D0START429")
    assert answer.stream.ts is None  # no stream; the classic message stands in
    assert len(slack.calls_to("chat.startStream")) == 1
    assert len(answer.replies()) == 1
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.text == expected(answer.state)
    assert reply.stream_state != "streaming"


async def test_a_refused_closing_stop_is_retried_bare_and_the_answer_shows_once(
    slack: SlackStandin,
) -> None:
    """stopStream refusing the closing notice: a bare stop follows; no second copy is posted."""
    answer = await open_answer(slack, "D0STOPNOTE")
    await answer.say("The refund window for an annual Pro plan ")
    slack.inject("chat.stopStream", body={"ok": False, "error": "invalid_arguments"})
    answer.state.fail(ErrorKind.INTERRUPTED, "cut off", 1.0)
    answer.stream.update()
    await answer.stream.finish()
    (reply,) = answer.replies()
    assert reply.stream_state == "stopped"
    assert reply.text == expected(answer.state)


async def test_a_shutdown_cancelling_an_answer_mid_stop_still_stops_the_stream(
    slack: SlackStandin,
) -> None:
    """Drain cancels the answer while stopStream waits out a 429: the stream still stops."""
    answer = await open_answer(slack, "D0STOPLATE")
    await answer.say("The refund window for an annual Pro plan ")
    slack.inject("chat.stopStream", status=429, headers={"Retry-After": "1"})
    answer.state.text, answer.state.phase = ANSWER, Phase.DONE
    answer.stream.update()
    finishing = asyncio.create_task(answer.stream.finish())
    await slack.wait_for(lambda: len(slack.calls_to("chat.stopStream")) == 1)
    finishing.cancel()  # what drain() does to an answer past its grace
    with contextlib.suppress(asyncio.CancelledError):
        await finishing
    await answer.stream.p.settle(10.0)
    assert answer.message.stream_state == "stopped"
    assert answer.message.text.rstrip() == ANSWER
