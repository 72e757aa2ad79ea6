"""The bot's DM as an assistant surface, end to end: real Bolt and slack_sdk against the Slack
stand-in. What is asserted is what the user sees in Slack: the greeting and suggested prompts
when they open the DM (agent view) or a new assistant thread (legacy view), thread titles, and
that questions in such threads are answered exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import SEED_CONTENT, running_bot
from tests.e2e.answers import ALICE, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"
SUPPORT = "C0SUPPORT"
PROMPTS = "assistant.threads.setSuggestedPrompts"


def first_question_per_specialist() -> dict[str, str]:
    items = yaml.safe_load((SEED_CONTENT / "eval.yaml").read_text(encoding="utf-8"))["questions"]
    firsts: dict[str, str] = {}
    for item in items:
        firsts.setdefault(item["expected"], item["question"])
    return firsts


def accepted(slack: Any, method: str) -> list[Any]:
    """The calls of `method` Slack accepted."""
    return [c for c in slack.calls_to(method) if c.status == 200 and c.error is None]


async def handled(slack: Any, bot: Any, n: int) -> None:
    """Wait until the bot has handled `n` assistant-surface events to the end."""
    await slack.wait_for(lambda: bot.assistant.handled >= n, timeout=10)


async def test_opening_the_dm_shows_a_greeting_and_one_prompt_per_specialist(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Agent view: opening the bot's DM sets up to 4 prompts (one per specialist, its first eval
    question) under a one-sentence greeting, for the DM itself (no thread_ts)."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await slack.app_home_opened(user=ALICE, channel=DM)
        await handled(slack, bot, 1)
    (call,) = accepted(slack, PROMPTS)
    assert call.args["channel_id"] == DM
    assert "thread_ts" not in call.args  # with it, an agent-view app's call silently fails
    expected = first_question_per_specialist()
    assert [p["message"] for p in call.args["prompts"]] == list(expected.values())[:4]
    assert all(0 < len(p["title"]) <= 30 for p in call.args["prompts"])
    greeting = call.args["title"]
    assert greeting.count(".") <= 1 and all(n in greeting for n in ("billing", "technical"))
    assert slack.assistant_threads[(DM, "")].prompts == call.args["prompts"]
    assert not slack.bot_messages(DM)  # nothing posted: opening the DM is not a conversation


async def test_opening_the_dm_again_soon_does_not_repeat_the_prompts(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Reopening the DM within minutes sets no prompts again; another user still gets theirs,
    and opening the Home tab sets none."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        await slack.app_home_opened(user=ALICE, channel=DM)
        await handled(slack, bot, 1)
        await slack.app_home_opened(user=ALICE, channel=DM)
        await slack.app_home_opened(user=ALICE, channel=DM, tab="home")
        await slack.app_home_opened(user=BOB, channel="D0BOB")
        await handled(slack, bot, 3)
        await slack.wait_for(lambda: bot.home.handled >= 1, timeout=10)  # the Home tab's own
    assert [c.args["channel_id"] for c in accepted(slack, PROMPTS)] == [DM, "D0BOB"]


async def test_configured_prompts_replace_the_defaults(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """POWABOT_SUGGESTED_PROMPTS (JSON) is what the DM suggests, in that order."""
    mine = [
        {"title": "Refunds", "message": "How do refunds work?"},
        {"title": "SSO", "message": "How do I set up SSO?"},
    ]
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_SUGGESTED_PROMPTS=json.dumps(mine)
    ) as bot:
        await slack.app_home_opened(user=ALICE, channel=DM)
        await handled(slack, bot, 1)
    (call,) = accepted(slack, PROMPTS)
    assert call.args["prompts"] == mine


async def test_a_refused_prompt_call_is_tried_again_on_the_next_open(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """When Slack refuses the prompts, the user is not marked greeted: the next open sets them."""
    slack.inject(PROMPTS, error="internal_error")
    async with running_bot(slack, powabase, tmp_path) as bot:
        await slack.app_home_opened(user=ALICE, channel=DM)
        await handled(slack, bot, 1)
        assert not accepted(slack, PROMPTS)
        await slack.app_home_opened(user=ALICE, channel=DM)
        await handled(slack, bot, 2)
    assert len(accepted(slack, PROMPTS)) == 1


async def test_legacy_assistant_thread_is_greeted_and_its_viewed_channel_remembered(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """Legacy assistant view: a new thread gets the greeting as a message and the prompts on that
    thread; the channel the user views is remembered, and updated when it changes."""
    thread_ts = "1790000000.000100"
    async with running_bot(slack, powabase, tmp_path) as bot:
        await slack.assistant_thread_started(
            user=ALICE, channel=DM, thread_ts=thread_ts, context={"channel_id": SUPPORT}
        )
        await handled(slack, bot, 1)
        assert bot.assistant.contexts.viewing(DM, thread_ts) == SUPPORT
        await slack.assistant_thread_context_changed(
            user=ALICE, channel=DM, thread_ts=thread_ts, context={"channel_id": "C0OTHER"}
        )
        await handled(slack, bot, 2)
        assert bot.assistant.contexts.viewing(DM, thread_ts) == "C0OTHER"
        assert bot.assistant.contexts.viewing(DM, "1790000000.000200") is None
    (greeting,) = bot_replies(slack, DM, thread_ts)
    assert "billing" in greeting.text and greeting.text.startswith("Hi")
    (call,) = accepted(slack, PROMPTS)
    assert call.args["thread_ts"] == thread_ts
    assert slack.assistant_threads[(DM, thread_ts)].prompts == call.args["prompts"]


async def test_a_question_in_an_assistant_thread_is_answered_once(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A DM message in a (legacy) assistant thread is answered exactly once, in that thread: the
    assistant listeners neither swallow nor duplicate it."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        root = await slack.user_says(user=ALICE, text="Hello", channel=DM)
        await slack.wait_for(lambda: bot.answerer.finished >= 1, timeout=20)
        await slack.assistant_thread_started(user=ALICE, channel=DM, thread_ts=root.ts)
        await handled(slack, bot, 1)
        await slack.user_says(
            user=ALICE,
            text="How do I authenticate against your API?",
            channel=DM,
            thread_ts=root.ts,
        )
        await slack.wait_for(lambda: bot.answerer.finished >= 2, timeout=20)
    assert len(powabase.runs) == 2
    assert powabase.runs[-1].delegated_to == "technical-agent"
    assert bot.answerer.finished == 2


async def test_thread_title_is_the_first_question_in_plain_words(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A DM thread's title is its first question without markup or mentions, at most 60
    characters; a title Slack refuses is no error."""
    question = (
        "<@U0BOT> *Why* does our <https://sso.example.com|SSO login> fail with "
        '"Audience mismatch" after we rotated the Okta certificate yesterday?'
    )
    async with running_bot(slack, powabase, tmp_path) as bot:
        await bot.assistant.set_title("T0TEAM", DM, "1790000000.000300", question)
        slack.inject("assistant.threads.setTitle", error="channel_not_found")
        await bot.assistant.set_title("T0TEAM", DM, "1790000000.000400", question)
    title = slack.assistant_threads[(DM, "1790000000.000300")].title
    assert title.startswith("Why does our SSO login fail with")
    assert len(title) <= 60 and title.endswith("…")
    assert not any(ch in title for ch in "<>*|")
