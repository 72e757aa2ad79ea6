"""Native chat streaming under Slack faults: budget refusals, 429s, 5xx, refused methods.

Each test drives one `NativeAnswerStream` through the real `Publisher` and slack_sdk client against
the Slack stand-in over a real socket, then checks what the user ends up seeing and how many calls
(or budget checks) it took. The stream opens with its first content (a task card or answer text):
the faults of intermediate appends are injected once it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bot.render.answer import EMPTY_ANSWER
from bot.slack.budget import Budgets
from bot.slack.calls import BACKOFF
from bot.slack.native import START_BURST, NativeAnswerStream
from bot.state import AnswerState, ErrorKind, Phase
from sandbox.slack import RateLimits, SlackStandin
from tests.conftest import running_bot
from tests.e2e.native_answers import (
    ALICE,
    ANSWER,
    SpyBudgets,
    appended_texts,
    appends,
    chunks_of,
    expected,
    ok,
    open_answer,
    publisher_for,
)

OPENING = "The refund "  # the first words: they open the stream (chat.startStream)


async def test_an_empty_append_budget_is_waited_for_not_spun_on(slack: SlackStandin) -> None:
    """With the workspace append budget empty, the stream waits for the next token (no spin)."""
    budgets = SpyBudgets(append_rate=5.0, append_capacity=1.0)  # one append per 0.2 s, no burst
    answer = await open_answer(slack, "D0BUDGET", budgets)
    words = ANSWER.split(" ")
    for end in (2, 4, 8, 12):
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
    await answer.say(OPENING)
    slack.inject("chat.appendStream", status=429, headers={"Retry-After": "1"}, times=1)
    await answer.say("The refund window for an annual Pro plan ")
    await answer.done(ANSWER)
    assert [c.status for c in appends(slack)].count(429) == 1
    assert budgets.appends.refused <= 3  # the paused second, checked once or twice, not in a loop
    assert answer.message.text == ANSWER
    assert slack.calls_to("chat.update") == []


async def test_a_task_card_refused_by_a_ratelimit_is_sent_again(slack: SlackStandin) -> None:
    """A task_update lost to `ratelimited` is not recorded as shown: the retry carries it."""
    answer = await open_answer(slack, "D0CARD", SpyBudgets())
    n = answer.delegate(at=100.0)
    await slack.wait_for(lambda: answer.tasks().get(f"task-{n}", {}).get("status") == "in_progress")
    slack.inject("chat.appendStream", body={"ok": False, "error": "ratelimited"}, times=1)
    answer.delegation_done(n, at=102.1)
    await slack.wait_for(lambda: bool(ok(appends(slack))), timeout=5)
    refused, first_ok = appends(slack)[0], ok(appends(slack))[0]
    assert refused.error == "ratelimited"
    assert chunks_of(first_ok, "task_update") == chunks_of(refused, "task_update")
    assert answer.tasks()["task-1"]["status"] == "complete"
    await answer.done(ANSWER)
    assert answer.tasks()["task-1"]["output"] == "Done in 2.1 s (1 search)."
    assert answer.message.text == ANSWER


async def test_transient_append_errors_are_retried_after_a_backoff(slack: SlackStandin) -> None:
    """Two 503s on appendStream are retried with a pause in between, and no fallback happens."""
    answer = await open_answer(slack, "D0FLAKY")
    await answer.say(OPENING)
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
    await answer.say(OPENING)
    slack.inject("chat.appendStream", body={"ok": False, "error": error}, times=50)
    answer.write("The refund window for an annual Pro plan ")
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
    await answer.say(OPENING)
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
    await answer.say(OPENING)
    slack.inject("chat.stopStream", body={"ok": False, "error": "not_allowed"}, times=50)
    await answer.done(ANSWER)
    assert answer.replies()[-1].text == expected(answer.state)


async def test_an_empty_final_answer_still_shows_the_empty_notice(slack: SlackStandin) -> None:
    """A run that completes with no text (nothing streamed yet) shows the 'couldn't answer'
    notice as one message: no stream is opened for it."""
    answer = await open_answer(slack, "D0EMPTY")
    await answer.done("")
    (reply,) = answer.replies()
    assert reply.text.strip() == EMPTY_ANSWER
    assert reply.stream_state is None
    assert slack.calls_to("chat.startStream") == [] and slack.calls_to("chat.update") == []


async def test_an_empty_answer_after_a_task_card_ends_the_stream_with_the_notice(
    slack: SlackStandin,
) -> None:
    """A stream opened for a specialist's card and ending with no text stops with the notice."""
    answer = await open_answer(slack, "D0EMPTY2")
    n = answer.delegate(at=100.0)
    await slack.wait_for(lambda: f"task-{n}" in answer.tasks())
    answer.delegation_done(n, at=101.0)
    await answer.done("")
    (reply,) = answer.replies()
    assert reply.text.strip() == EMPTY_ANSWER
    assert reply.stream_state == "stopped"
    assert answer.tasks()["task-1"]["status"] == "complete"
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
            answer = await open_answer(slack, f"D0DONE{i}", budgets)
            await slack.wait_for(start_slot_free, timeout=5)
            await answer.say(OPENING)  # opens the stream
            finishing.append(answer)
        streaming = await open_answer(slack, "D0STILL", budgets)
        await slack.wait_for(start_slot_free, timeout=5)
        await streaming.say(OPENING)
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
    answer = await open_answer(slack, "D0BAD")
    answer.write(OPENING)
    await slack.wait_for(lambda: bool(slack.calls_to("chat.startStream")), timeout=5)
    state = answer.state
    state.text, state.phase = ANSWER, Phase.DONE
    answer.stream.update()
    await answer.stream.finish()
    assert answer.stream.ts is None
    assert [m.text for m in answer.replies()] == [expected(state)]
    assert all(m.stream_state != "streaming" for m in answer.replies())


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
    assert all(m.stream_state != "streaming" for m in replies)


async def test_a_burst_of_dms_beyond_the_stream_budget_shows_text_at_once(
    slack: SlackStandin,
) -> None:
    """More DMs get their first words at once than startStream's burst allows: the rest open as
    classic messages right away instead of queueing for a stream slot, and every DM finishes."""
    publisher = publisher_for(slack)
    answers = [await open_answer(slack, f"D0BURST{i}", publisher=publisher) for i in range(6)]
    for answer in answers:
        answer.write(ANSWER + " ")
    for answer in answers:  # within a second or two, not Tier 2's minutes
        await slack.wait_for(lambda a=answer: bool(a.replies()), timeout=2)  # type: ignore[misc]
    started = len(slack.calls_to("chat.startStream"))
    assert started == int(START_BURST)  # the rest are classic posts
    assert len(slack.calls_to("chat.postMessage")) == 6 - started
    for answer in answers:
        await answer.done(ANSWER)
        (reply,) = answer.replies()
        assert reply.text.rstrip() == ANSWER
        assert reply.stream_state != "streaming"


@pytest.mark.parametrize(
    "fault",
    [{"status": 429, "headers": {"Retry-After": "30"}}, {"status": 503}],
    ids=["429", "503"],
)
async def test_a_rate_limited_start_opens_a_classic_message_at_once(
    slack: SlackStandin, fault: dict[str, Any]
) -> None:
    """startStream answering 429 (or 5xx) is not waited out or retried: the first words are
    posted classically."""
    slack.inject("chat.startStream", **fault)
    answer = await open_answer(slack, "D0START429")
    answer.write(OPENING)
    await slack.wait_for(lambda: bool(answer.replies()), timeout=2)
    assert answer.stream.ts is None  # no stream; the classic message stands in
    assert len(slack.calls_to("chat.startStream")) == 1
    await answer.done(ANSWER)
    (reply,) = answer.replies()
    assert reply.text == expected(answer.state)
    assert reply.stream_state is None


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


async def test_a_refused_status_falls_back_to_a_classic_placeholder(slack: SlackStandin) -> None:
    """setStatus refused at the start: a classic placeholder shows instead, and the answer ends
    in that same message."""
    slack.inject("assistant.threads.setStatus", error="not_allowed", times=5)
    publisher = publisher_for(slack, Budgets())
    asked = await slack.user_says(user=ALICE, text="Refund window?", channel="D0NOSTATUS")
    stream = publisher.open(
        slack.workspace.team_id, "D0NOSTATUS", asked.ts, user_id=ALICE, channel_type="im"
    )
    assert isinstance(stream, NativeAnswerStream)
    state = AnswerState(question="Refund window?", phase=Phase.WORKING)
    placeholder = await stream.start(state)
    assert placeholder is not None
    state.text, state.phase = ANSWER, Phase.DONE
    stream.update()
    await stream.finish()
    replies = [m for m in slack.thread("D0NOSTATUS", asked.ts) if m.is_bot]
    assert [m.ts for m in replies] == [placeholder]
    assert replies[0].text == expected(state)
    assert slack.calls_to("chat.startStream") == []
