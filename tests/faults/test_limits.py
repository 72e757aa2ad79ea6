"""Limits that keep the bot standing, over real sockets with the real bot.

At most POWABOT_MAX_IN_FLIGHT answers run at once (the rest are told at once that they are in
line, and are answered in turn, first come first served; past POWABOT_MAX_QUEUED waiting they are
told at once that the bot is busy); one run at a time per thread (a follow-up waits for the answer
before it, told so at once; other threads do not wait); a slow placeholder delays the Powabase run
by at most the head start; and a blank secret stops the start instead of failing every event.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.conversation import PLACEHOLDER_HEAD_START
from bot.errors import ConfigError
from bot.render.answer import AFTER_PREVIOUS, IN_LINE, notice
from bot.settings import load_settings
from bot.state import ErrorKind
from sandbox.powabase import PowabaseStandin
from sandbox.powabase.state import RunRecord
from sandbox.slack import SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies, expected_text

QUESTION = "What is the refund window for Pro annual?"
SUPPORT = "C0LIMITS"
BUSY = notice(ErrorKind.BUSY, partial=False)


def heard(slack: SlackStandin, channel: str, thread_ts: str) -> bool:
    """The bot has acknowledged the question in this thread: a reply, or the thread's status."""
    return bool(bot_replies(slack, channel, thread_ts)) or any(
        c.args.get("thread_ts") == thread_ts and c.status == 200
        for c in slack.calls_to("assistant.threads.setStatus")
    )


def first_post(slack: SlackStandin, thread_ts: str) -> str | None:
    """The text of the bot's first post in a thread (None while there is none)."""
    posts = [c for c in slack.calls_to("chat.postMessage") if c.args["thread_ts"] == thread_ts]
    return str(posts[0].args["text"]) if posts else None


def run_span(run: RunRecord) -> tuple[float, float]:
    """When Powabase began and ended one run (monotonic, the stand-ins share the clock)."""
    assert run.events and run.t_complete is not None, f"run did not complete: {run.status}"
    return run.events[0][0], run.t_complete


def most_at_once(runs: list[RunRecord]) -> int:
    """The largest number of these runs that were streaming at the same instant."""
    edges = sorted(
        [(start, 1) for start, _ in map(run_span, runs)]
        + [(end, -1) for _, end in map(run_span, runs)]
    )
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


async def test_questions_beyond_the_limit_wait_in_line_and_are_all_answered(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """With two slots, five askers at once: three are told "in line" at once (a message), the
    two running see their progress as the thread's status; all get answers."""
    powabase.context.delta_delay = 0.01  # each answer streams for a while
    users = [f"U0USER{i}" for i in range(5)]
    async with running_bot(slack, powabase, tmp_path, POWABOT_MAX_IN_FLIGHT=2) as bot:
        asked = await asyncio.gather(
            *(
                slack.user_says(user=user, text=QUESTION, channel=f"D0LINE{i}")
                for i, user in enumerate(users)
            )
        )
        threads = [(f"D0LINE{i}", msg.ts) for i, msg in enumerate(asked)]
        # Everyone hears from the bot before any answer is complete.
        await slack.wait_for(lambda: all(heard(slack, c, ts) for c, ts in threads))
        assert not any(r.t_complete for r in powabase.runs)
        await slack.wait_for(
            lambda: sum(first_post(slack, ts) == IN_LINE for _, ts in threads) == 3
        )
        assert not any(r.t_complete for r in powabase.runs)
        await slack.wait_for(lambda: bot.answerer.finished >= len(users), timeout=60)
    assert len(powabase.runs) == len(users)
    assert most_at_once(powabase.runs) <= 2
    for channel, ts in threads:
        (answer, *_trace) = bot_replies(slack, channel, ts)
        assert answer.text in {expected_text(r.answer) for r in powabase.runs}
        assert IN_LINE not in answer.text


async def test_a_follow_up_waits_for_the_answer_before_it_but_other_threads_do_not(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """A follow-up sent mid-answer is told at once that it comes next, and runs after it; a
    question in another thread runs alongside."""
    powabase.context.delta_delay = 0.03
    async with running_bot(slack, powabase, tmp_path) as bot:
        first = await slack.user_says(
            user=ALICE, text=QUESTION, channel=SUPPORT, channel_type="channel", mention=True
        )
        await slack.wait_for(lambda: bool(powabase.runs) and bool(powabase.runs[0].events))
        await slack.user_says(
            user=ALICE, text="How do I rotate an API key?", channel=SUPPORT,
            channel_type="channel", thread_ts=first.ts,
        )  # fmt: skip
        other = await slack.user_says(
            user="U0BOB", text="Which plans include SSO?", channel="D0BOB"
        )
        assert powabase.runs[0].t_complete is None, "the first answer ended before the follow-up"
        told = [c for c in slack.calls_to("chat.postMessage") if c.args["text"] == AFTER_PREVIOUS]
        await slack.wait_for(lambda: bool(told) or bool(told.extend(
            c for c in slack.calls_to("chat.postMessage") if c.args["text"] == AFTER_PREVIOUS
        )))  # fmt: skip
        await slack.wait_for(lambda: bot.answerer.finished >= 3, timeout=60)
    by_message = {r.message: r for r in powabase.runs}
    mentioned = next(r for m, r in by_message.items() if m.endswith(QUESTION))
    follow_up, elsewhere = (
        by_message["How do I rotate an API key?"],
        by_message["Which plans include SSO?"],
    )
    assert run_span(follow_up)[0] > run_span(mentioned)[1]  # began only after the first ended
    (acknowledged,) = told
    assert acknowledged.args["thread_ts"] == first.ts
    assert acknowledged.t < run_span(mentioned)[1]  # told while the first was still running
    assert follow_up.session_id_sent == mentioned.session_id  # the same Powabase session
    assert run_span(elsewhere)[0] < run_span(mentioned)[1]  # another thread did not wait
    replies = [m.text for m in bot_replies(slack, SUPPORT, first.ts)]
    assert expected_text(mentioned.answer) in replies and expected_text(follow_up.answer) in replies
    assert replies.index(expected_text(mentioned.answer)) < replies.index(
        expected_text(follow_up.answer)
    )
    (answer, *_trace) = bot_replies(slack, "D0BOB", other.ts)
    assert answer.text == expected_text(elsewhere.answer)
    assert len(bot.answerer.threads) == 0  # no lock left behind


async def test_a_slow_placeholder_delays_the_run_by_at_most_the_head_start(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """A first status (or placeholder) that takes 1.5 s (a slow Slack, or a post queued behind
    the channel's budget) holds the Powabase run back by no more than the head start."""
    slack.inject("assistant.threads.setStatus", fault="slow", delay=1.5)
    async with running_bot(slack, powabase, tmp_path) as bot:
        msg = await ask(slack, bot, "D0EARLY", QUESTION)
    placeholder = next(
        c for c in slack.calls_to("assistant.threads.setStatus") if c.args["thread_ts"] == msg.ts
    )  # arrived at `t`, answered 1.5 s later
    run = powabase.runs[-1]
    assert run.events[0][0] < placeholder.t + PLACEHOLDER_HEAD_START + 0.25
    (answer, *_trace) = bot_replies(slack, "D0EARLY", msg.ts)
    assert answer.text == expected_text(run.answer)


async def test_a_slot_freed_while_a_waiting_placeholder_is_posted_goes_to_it_first(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """One slot: the second asker is in line from the moment it arrives, even while its
    placeholder is still being posted, so a third arriving after the slot frees runs after it."""
    powabase.inject_run_fault("delay", delay=0.5)  # the first answer holds the slot a while
    async with running_bot(slack, powabase, tmp_path, POWABOT_MAX_IN_FLIGHT=1) as bot:
        await slack.user_says(user="U0ONE", text="First: " + QUESTION, channel="D0FIFO1")
        await slack.wait_for(lambda: len(powabase.runs) == 1)
        slack.inject("chat.postMessage", fault="slow", delay=2.0)  # the second's placeholder
        second = await slack.user_says(user="U0TWO", text="Second: " + QUESTION, channel="D0FIFO2")
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=10)
        assert first_post(slack, second.ts) is None, "the second's placeholder was not slow"
        await slack.user_says(user="U0THREE", text="Third: " + QUESTION, channel="D0FIFO3")
        await slack.wait_for(lambda: bot.answerer.finished >= 3, timeout=30)
    assert [r.message.split(":")[0] for r in powabase.runs] == ["First", "Second", "Third"]
    assert most_at_once(powabase.runs) == 1


async def test_past_the_waiting_limit_a_question_is_told_at_once_that_the_bot_is_busy(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """One slot, one place in line: a third asker is told at once to try again in a few
    minutes (nothing held waiting, nothing asked upstream); the other two are answered."""
    powabase.inject_run_fault("delay", delay=1.0)
    settings = {"POWABOT_MAX_IN_FLIGHT": 1, "POWABOT_MAX_QUEUED": 1}
    async with running_bot(slack, powabase, tmp_path, **settings) as bot:
        first = await slack.user_says(user="U0ONE", text=QUESTION, channel="D0BUSY1")
        await slack.wait_for(lambda: len(powabase.runs) == 1)
        second = await slack.user_says(user="U0TWO", text=QUESTION, channel="D0BUSY2")
        await slack.wait_for(lambda: first_post(slack, second.ts) == IN_LINE)
        third = await slack.user_says(user="U0THREE", text=QUESTION, channel="D0BUSY3")
        await slack.wait_for(lambda: bot_replies(slack, "D0BUSY3", third.ts))
        assert not powabase.runs[0].t_complete, "the first answer ended before the third asked"
        assert len(bot.answerer.waiting) == 1
        await slack.wait_for(lambda: bot.answerer.finished >= 3, timeout=30)
    assert [m.text for m in bot_replies(slack, "D0BUSY3", third.ts)] == [BUSY]
    assert "try again in a few minutes" in BUSY
    assert len(powabase.runs) == 2
    for channel, msg in (("D0BUSY1", first), ("D0BUSY2", second)):
        (answer, *_trace) = bot_replies(slack, channel, msg.ts)
        assert answer.text == expected_text(powabase.runs[0].answer)


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_a_blank_signing_secret_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """An empty SLACK_SIGNING_SECRET stops `powabot run` at load, naming the variable."""
    monkeypatch.chdir(tmp_path)
    for name, setting in {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "POWABASE_URL": "https://example.powabase.ai",
        "POWABASE_API_KEY": "pb-key",
        "POWABASE_ORCHESTRATION_ID": "orch_1",
        "SLACK_SIGNING_SECRET": value,
    }.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ConfigError) as refused:
        load_settings("run")
    assert any(p.startswith("SLACK_SIGNING_SECRET") for p in refused.value.problems)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "a-real-secret")
    assert load_settings("run").SLACK_SIGNING_SECRET is not None
