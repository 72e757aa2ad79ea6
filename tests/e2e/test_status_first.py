"""Status first, on the classic path: until an answer has text, its progress shows as the
thread's assistant status (assistant.threads.setStatus with loading_messages), so no placeholder
message is posted and no chat.update budget is spent on it; the first words arrive as a post.

Over real sockets against the Slack stand-in (the real bot, or a publisher driven directly).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import SlackDeliveryError
from bot.render.answer import PLACEHOLDER
from bot.slack.budget import Budgets
from bot.slack.publisher import AnswerStream, Publisher
from bot.slack.status import REFRESH_AFTER
from bot.state import Activity, ActivityKind, AnswerState, Phase
from sandbox.powabase import PowabaseStandin
from sandbox.slack import ApiCall, RateLimits, SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text
from tests.fakes import FakeClock

SET_STATUS = "assistant.threads.setStatus"
QUESTION = "What is the refund window for Pro annual?"


def statuses(slack: SlackStandin, thread_ts: str) -> list[ApiCall]:
    """The setStatus calls Slack accepted for one thread, oldest first."""
    return [
        c
        for c in slack.calls_to(SET_STATUS)
        if c.args.get("thread_ts") == thread_ts and c.status == 200 and c.error is None
    ]


def posts(slack: SlackStandin, thread_ts: str) -> list[ApiCall]:
    """The chat.postMessage calls into one thread, oldest first."""
    return [c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == thread_ts]


def loading_lines(calls: list[ApiCall]) -> list[str]:
    return [str(line) for c in calls for line in c.args.get("loading_messages") or []]


def first_word(answer: str) -> str:
    return next(w for w in answer.split() if w.isalpha())


def classic_stream(
    slack: SlackStandin, publisher: Publisher, channel: str, ts: str
) -> AnswerStream:
    return publisher.classic(slack.workspace.team_id, channel, ts)


def publisher_for(slack: SlackStandin, **options: Any) -> Publisher:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return Publisher(client, min_interval=options.pop("min_interval", 0.01), **options)


async def test_progress_shows_as_the_thread_status_and_the_first_words_as_a_post(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Before any answer text the user sees "Asking the billing specialist…" as the thread's
    status, with no message posted and no chat.update; the first words arrive as a post that
    clears the status, and edits carry the rest to the exact final answer."""
    powabase.context.delta_delay = 0.02
    powabase.context.step_delay = 0.2  # the model takes a moment between steps
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0STATUS", QUESTION)
    run = powabase.runs[-1]
    shown, (first, *_rest) = statuses(slack, msg.ts), posts(slack, msg.ts)
    lines = loading_lines(shown)
    assert any("billing specialist" in line.lower() for line in lines), lines
    assert all(s.t < first.t for s in shown)  # only the status, until the first words
    assert [c for c in slack.calls_to("chat.update") if c.t < first.t] == []
    assert first_word(run.answer) in first.args["text"]
    assert first.args["text"] != PLACEHOLDER
    assert slack.assistant_threads[("D0STATUS", msg.ts)].status == ""  # cleared by the reply
    (answer, *_trace) = bot_replies(slack, "D0STATUS", msg.ts)
    assert answer.ts == first.response["ts"]
    assert answer.text == expected_text(run.answer)


async def test_a_refused_status_falls_back_to_a_placeholder_message(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Slack refuses the thread status (a workspace that does not allow it): the user gets
    the placeholder message at once instead, edited into the answer; no status is tried
    again for that answer."""
    powabase.context.delta_delay = 0.01
    slack.inject(SET_STATUS, error="missing_scope")
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0NOSTATUS", QUESTION)
    (first, *_more) = posts(slack, msg.ts)
    assert first.args["text"] == PLACEHOLDER
    assert len(slack.calls_to(SET_STATUS)) == 1
    (answer, *_trace) = bot_replies(slack, "D0NOSTATUS", msg.ts)
    assert answer.ts == first.response["ts"]
    assert answer.text == expected_text(powabase.runs[-1].answer)


async def test_a_channel_gone_at_the_first_status_sends_nothing_to_powabase(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """The bot was removed from the channel: the first status is refused, the question is not
    run upstream, and no message is tried there."""
    slack.channel_gone("C0REMOVED", "not_in_channel")
    async with running_bot(slack, powabase, tmp_path) as bot:
        await ask(slack, bot, "C0REMOVED", QUESTION, mention=True)
    assert powabase.runs == []
    assert [c.error for c in slack.calls_to(SET_STATUS)] == ["not_in_channel"]
    assert slack.calls_to("chat.postMessage") == []


async def test_a_channel_gone_while_only_the_status_shows_stops_every_write(
    slack: SlackStandin,
) -> None:
    """The channel is archived while the answer only shows a status: the next status says so,
    `channel_gone` turns True, nothing is posted, and finish() raises it at once."""
    publisher = publisher_for(slack)
    asked = await slack.user_says(user=ALICE, text=QUESTION, channel="C0SHUT")
    stream = classic_stream(slack, publisher, "C0SHUT", asked.ts)
    state = AnswerState(question=QUESTION, phase=Phase.WORKING)
    assert await stream.start(state) is None
    slack.channel_gone("C0SHUT", "is_archived")
    state.activity = Activity(ActivityKind.DELEGATING, agent="billing-agent")
    stream.update()
    await slack.wait_for(lambda: stream.channel_gone)
    state.text, state.phase = "Refunds are issued within 30 days.", Phase.DONE
    with pytest.raises(SlackDeliveryError) as raised:
        await stream.finish()
    assert raised.value.channel_gone
    assert slack.calls_to("chat.postMessage") == [] and slack.calls_to("chat.update") == []


async def test_a_status_nothing_changes_is_shown_again_before_slack_clears_it(
    slack: SlackStandin,
) -> None:
    """Slack clears a status after 2 minutes: a long silence before the first words shows the
    same line again every 90 s (on a fake clock: no real waiting)."""
    clock = FakeClock()
    at: dict[int, float] = {}
    slack.on_call.append(lambda call: at.setdefault(id(call), clock.now))
    publisher = publisher_for(slack, clock=clock, sleep=clock.sleep)
    asked = await slack.user_says(user=ALICE, text=QUESTION, channel="D0QUIET")
    stream = classic_stream(slack, publisher, "D0QUIET", asked.ts)
    state = AnswerState(question=QUESTION, phase=Phase.WORKING)
    assert await stream.start(state) is None
    await slack.wait_for(lambda: len(statuses(slack, asked.ts)) >= 3)
    state.text, state.phase = "Refunds are issued within 30 days.", Phase.DONE
    await stream.finish()
    shown = statuses(slack, asked.ts)
    gaps = [at[id(later)] - at[id(earlier)] for earlier, later in itertools.pairwise(shown)]
    assert all(REFRESH_AFTER <= gap < 120.0 for gap in gaps)
    assert len(set(loading_lines(shown))) == 1  # the same line, shown again
    (answer,) = bot_replies(slack, "D0QUIET", asked.ts)
    assert answer.text == expected_text(state.text)


async def test_the_first_message_is_announced_once_with_its_ts(slack: SlackStandin) -> None:
    """`on_posted` hears of the answer's first message (posted with the first words) exactly
    once; a placeholder that start() returns is not announced again."""
    publisher = publisher_for(slack)
    heard: list[tuple[str, bool]] = []

    async def on_posted(ts: str, native: bool) -> None:
        heard.append((ts, native))

    asked = await slack.user_says(user=ALICE, text=QUESTION, channel="D0LEASE")
    stream = classic_stream(slack, publisher, "D0LEASE", asked.ts)
    stream.on_posted = on_posted
    state = AnswerState(question=QUESTION)
    assert await stream.start(state) is None
    state.text, state.phase = "Refunds are ", Phase.STREAMING
    stream.update()
    await slack.wait_for(lambda: bool(heard))
    state.text, state.phase = "Refunds are issued within 30 days.", Phase.DONE
    await stream.finish()
    (answer,) = bot_replies(slack, "D0LEASE", asked.ts)
    assert heard == [(answer.ts, False)]

    slack.inject(SET_STATUS, error="missing_scope")
    asked = await slack.user_says(user=ALICE, text=QUESTION, channel="D0LEASE2")
    stream = classic_stream(slack, publisher, "D0LEASE2", asked.ts)
    stream.on_posted = on_posted
    state = AnswerState(question=QUESTION)
    placeholder = await stream.start(state)
    assert placeholder is not None
    state.text, state.phase = "Refunds are issued.", Phase.DONE
    await stream.finish()
    assert heard == [(answer.ts, False)]


async def test_amend_edits_only_what_changed_after_the_final_answer(slack: SlackStandin) -> None:
    """After finish(), amend() edits the final message once when the state changed since, and
    writes nothing when it did not."""
    publisher = publisher_for(slack)
    asked = await slack.user_says(user=ALICE, text=QUESTION, channel="D0AMEND")
    stream = classic_stream(slack, publisher, "D0AMEND", asked.ts)
    state = AnswerState(question=QUESTION)
    await stream.start(state)
    state.text, state.phase = "Refunds are issued within 30 days.", Phase.DONE
    await stream.finish()
    (posted,) = slack.calls_to("chat.postMessage")
    assert slack.calls_to("chat.update") == []
    state.text += "\n\nSee the refunds FAQ."
    await stream.amend()
    await stream.amend()
    (answer,) = bot_replies(slack, "D0AMEND", asked.ts)
    assert answer.ts == posted.response["ts"] and answer.text == expected_text(state.text)
    assert len(slack.calls_to("chat.update")) == 1


@pytest.fixture
async def squeezed_slack() -> AsyncIterator[SlackStandin]:
    """A stand-in enforcing Slack's rates, ten times faster (the bench's time scale): 500
    chat.update per minute per workspace, one post per second per channel."""
    standin = SlackStandin(rate_limits=RateLimits(update_per_minute_per_workspace=500))
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


async def test_under_a_squeezed_update_budget_every_answer_shows_its_first_words_as_a_post(
    squeezed_slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """40 answers at once in one workspace, their text streaming the whole time: each shows
    its progress as a status and its first words as a post, none waits for the workspace's
    chat.update budget to free up, progress never spends an edit, and all 40 end exact
    without a 429."""
    slack, answers = squeezed_slack, 40
    powabase.context.delta_delay = 0.01
    budgets = Budgets(edits_per_minute=450)  # the bot's 45/min, at the same ten-fold speed
    settings = {"POWABOT_EDIT_INTERVAL": 0.1}
    async with running_bot(slack, powabase, tmp_path, budgets=budgets, **settings) as bot:
        asked = await asyncio.gather(
            *(
                slack.user_says(user=f"U0LOAD{i:02}", text=QUESTION, channel=f"D0LOAD{i:02}")
                for i in range(answers)
            )
        )
        await slack.wait_for(lambda: bot.answerer.finished >= answers, timeout=90)
    assert slack.ratelimited_count == 0
    (expected,) = {expected_text(r.answer) for r in powabase.runs}  # one question, one answer
    opening = first_word(expected)
    firsts = []
    for msg in asked:
        first = posts(slack, msg.ts)[0]
        assert statuses(slack, msg.ts) and statuses(slack, msg.ts)[0].t < first.t
        assert opening in first.args["text"]  # the first words, not a placeholder
        firsts.append(first.t)
        (answer, *_trace) = bot_replies(slack, str(msg.channel), msg.ts)
        assert answer.text == expected
    updates = slack.calls_to("chat.update")
    # By the last first post, no more edits than the budget's initial burst: no answer's first
    # words waited for the update budget to free up (each would have needed one edit).
    assert len([u for u in updates if u.t < max(firsts)]) <= budgets.edit_burst
    assert all(opening in u.args["text"] for u in updates)  # no edit went to progress alone
