"""A fresh start, end to end: `reset` in a thread (or the "New conversation" button under an
answer) maps that thread to a new Powabase session for the user; the old mapping is kept as
history. Real Bolt and slack_sdk against the Slack stand-in, the real answerer against
Powabase's (which records the session id each run was sent)."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from bot.render.feedback import RESET_ACTION
from bot.service import Powabot
from bot.slack.support import FRESH_START, RESET_HOW
from bot.store.base import ThreadKey
from tests.e2e.answers import ALICE, ask, bot_replies

BOB = "U0BOB"
DM = "D0ALICE"
SUPPORT = "C0SUPPORT"
QUESTION = "What is the refund window for an annual Pro plan?"
FOLLOW_UP = "And for a monthly one?"


async def says(slack: Any, bot: Powabot, text: str, channel: str, **where: Any) -> None:
    """Alice writes `text`; returns once the support side handled it."""
    handled = bot.support.handled
    await slack.user_says(user=ALICE, text=text, channel=channel, **where)
    await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)


async def test_reset_in_a_dm_thread_starts_a_new_powabase_session(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """After `reset` in the answer's DM thread the next question there goes to a new Powabase
    session (the user is told), and the old mapping is kept as the thread's history."""
    asked = await ask(slack, bot, DM, QUESTION)
    first = powabase.runs[-1]
    await says(slack, bot, "Reset", DM, thread_ts=asked.ts)
    assert bot_replies(slack, DM, asked.ts)[-1].text == FRESH_START
    assert len(powabase.runs) == 1  # "reset" is not a question

    before = bot.answerer.finished
    await slack.user_says(user=ALICE, text=FOLLOW_UP, channel=DM, thread_ts=asked.ts)
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    second = powabase.runs[-1]
    assert second.session_id_sent and second.session_id_sent != first.session_id
    assert second.session_id != first.session_id  # Powabase started a new session

    key = ThreadKey(slack.workspace.team_id, DM, asked.ts, ALICE)
    (old,) = await bot.store.session_history(key)
    assert old.agent_session_id == first.session_id
    current = await bot.store.get_session(key)
    assert current is not None and current.agent_session_id == second.session_id_sent


async def test_a_redelivered_reset_starts_over_once(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Slack delivering the same `reset` again (its ack was late) resets and confirms once."""
    asked = await ask(slack, bot, DM, QUESTION)
    with capture_logs() as logs:
        handled = bot.support.handled
        reset = await slack.user_says(user=ALICE, text="reset", channel=DM, thread_ts=asked.ts)
        await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)
        await slack.redeliver(reset.envelope_id)
        await slack.wait_for(
            lambda: any(e["event"] == "event_duplicate_ignored" for e in logs), timeout=10
        )
    assert [m.text for m in bot_replies(slack, DM, asked.ts)].count(FRESH_START) == 1
    key = ThreadKey(slack.workspace.team_id, DM, asked.ts, ALICE)
    assert len(await bot.store.session_history(key)) == 1


async def test_new_conversation_button_under_an_answer_starts_over(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """ "New conversation" under an answer in a channel thread starts a new session for the
    clicking user in that thread."""
    asked = await ask(slack, bot, SUPPORT, QUESTION, mention=True)
    first = powabase.runs[-1]
    answer = next(
        m
        for m in bot_replies(slack, SUPPORT, asked.ts)
        if any(b.get("type") == "context_actions" for b in m.blocks or [])
    )
    handled = bot.support.handled
    await slack.click(user=ALICE, channel=SUPPORT, message_ts=answer.ts, action_id=RESET_ACTION)
    await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)
    assert bot_replies(slack, SUPPORT, asked.ts)[-1].text == FRESH_START

    before = bot.answerer.finished
    await slack.user_says(
        user=ALICE, text=FOLLOW_UP, channel=SUPPORT, channel_type="channel", thread_ts=asked.ts
    )
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    assert powabase.runs[-1].session_id_sent != first.session_id
    key = ThreadKey(slack.workspace.team_id, SUPPORT, asked.ts, ALICE)
    assert [s.agent_session_id for s in await bot.store.session_history(key)] == [first.session_id]


async def test_a_top_level_reset_in_the_dm_explains_how_it_works(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """ "new conversation" sent top-level in the DM (where every message already starts its own
    conversation) is not asked: only the user is told how a reset works."""
    await says(slack, bot, "new conversation", DM)
    (told,) = slack.ephemerals
    assert told.text == RESET_HOW and told.recipient == ALICE and told.thread_ts is None
    assert not powabase.runs and not slack.bot_messages(DM)


async def test_reset_in_someone_elses_thread_is_ignored(
    slack: Any, powabase: Any, bot: Powabot
) -> None:
    """Bob's plain `reset` in Alice's channel thread neither resets her conversation nor gets
    a reply."""
    asked = await ask(slack, bot, SUPPORT, QUESTION, mention=True)
    first = powabase.runs[-1]
    await slack.user_says(
        user=BOB, text="reset", channel=SUPPORT, channel_type="channel", thread_ts=asked.ts
    )
    before = bot.answerer.finished
    await slack.user_says(
        user=ALICE, text=FOLLOW_UP, channel=SUPPORT, channel_type="channel", thread_ts=asked.ts
    )
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    assert powabase.runs[-1].session_id_sent == first.session_id  # Alice's goes on
    key = ThreadKey(slack.workspace.team_id, SUPPORT, asked.ts, ALICE)
    assert await bot.store.session_history(key) == []
    assert FRESH_START not in [m.text for m in bot_replies(slack, SUPPORT, asked.ts)]
    assert not slack.ephemerals and bot.support.handled == 0
