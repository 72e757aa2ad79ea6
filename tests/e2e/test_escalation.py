"""Escalation to a person, end to end: "Talk to a person" after a bad rating, or a message
asking for a human, posts the whole context in the escalation channel with a "Mark resolved"
button; the user is told in their thread; the bot stays quiet there until it is resolved.
Real Bolt and slack_sdk against the Slack stand-in, the real answerer against Powabase's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from bot.escalation import (
    HANDED_OVER,
    HANDED_OVER_DM,
    NO_CHANNEL,
    UNKNOWN_ANSWER,
    UNREACHABLE,
)
from bot.render.escalation import RESOLVE_ACTION
from bot.render.feedback import ESCALATE_ACTION, FEEDBACK_ACTION
from bot.service import Powabot
from bot.slack.support import RESOLVED_NOTE
from bot.store.base import ThreadKey
from tests.conftest import running_bot
from tests.e2e.answers import ALICE, ask, bot_replies

DM = "D0ALICE"
SUPPORT = "C0SUPPORT"
ESCALATIONS = "C0ESCALATE"
BILLING_ESCALATIONS = "C0BILLINGESC"
AGENT = "U0AGENT"  # a person of the support team
QUESTION = "What is the refund window for an annual Pro plan?"  # the billing specialist's


def texts(slack: Any, channel: str, thread_ts: str) -> list[str]:
    return [m.text for m in bot_replies(slack, channel, thread_ts)]


def escalation_posts(slack: Any, channel: str = ESCALATIONS) -> list[Any]:
    """The bot's top-level messages in the escalation channel."""
    return [m for m in slack.bot_messages(channel) if m.thread_ts in (None, m.ts)]


def resolve_button(message: Any) -> dict[str, Any] | None:
    for block in message.blocks or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == RESOLVE_ACTION:
                return dict(element)
    return None


def everything_shown(message: Any) -> str:
    """Every text of a message: its text, its blocks' texts, its containers' children."""
    return message.text + "\n" + str(message.blocks)


async def answered(slack: Any, bot: Powabot, channel: str, *, mention: bool = False) -> Any:
    """Alice asks the billing question (DM, or a mention in a channel); the asked message."""
    return await ask(slack, bot, channel, QUESTION, mention=mention)


async def talk_to_a_person(slack: Any, bot: Powabot, channel: str, thread_ts: str) -> None:
    """Alice rates the answer down, then clicks "Talk to a person" in the bot's private reply;
    returns once the hand-over was handled."""
    rated = next(
        m
        for m in bot_replies(slack, channel, thread_ts)
        if any(b.get("type") == "context_actions" for b in m.blocks or [])
    )
    before = bot.feedback.handled
    await slack.click(
        user=ALICE, channel=channel, message_ts=rated.ts, action_id=FEEDBACK_ACTION, value="bad"
    )
    await slack.wait_for(lambda: bot.feedback.handled > before, timeout=10)
    offer = [e for e in slack.ephemerals if e.recipient == ALICE][-1]
    handled = bot.support.handled
    await slack.click(user=ALICE, channel=channel, message_ts=offer.ts, action_id=ESCALATE_ACTION)
    await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)


async def says_in_thread(slack: Any, bot: Powabot, channel: str, thread_ts: str, text: str) -> None:
    """Alice writes in the thread; returns once the support side handled it (a hand-over)."""
    handled = bot.support.handled
    await slack.user_says(
        user=ALICE,
        text=text,
        channel=channel,
        thread_ts=thread_ts,
        **({} if channel.startswith("D") else {"channel_type": "channel"}),
    )
    await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)


async def resolve(slack: Any, bot: Powabot, post: Any, *, user: str = AGENT) -> None:
    handled = bot.support.handled
    await slack.click(user=user, channel=post.channel, message_ts=post.ts, action_id=RESOLVE_ACTION)
    await slack.wait_for(lambda: bot.support.handled > handled, timeout=10)


async def test_talk_to_a_person_hands_over_the_whole_context(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """After a bad rating in a channel thread, "Talk to a person" posts in the escalation
    channel who asked, the question, the answer given, its sources, a link to the thread, the
    collapsed trace and a "Mark resolved" button; the user is told in their thread."""
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
    ) as bot:
        asked = await answered(slack, bot, SUPPORT, mention=True)
        await talk_to_a_person(slack, bot, SUPPORT, asked.ts)
        (post,) = escalation_posts(slack)
        key = ThreadKey(slack.workspace.team_id, SUPPORT, asked.ts, ALICE)
        escalation = await bot.store.active_escalation(key)
    run = powabase.runs[-1]
    shown = everything_shown(post)
    assert f"<@{ALICE}>" in post.text and QUESTION in shown
    assert run.answer.split()[0] in shown  # the answer given
    assert "Sources:" in shown and "billing-agent" in shown
    assert f"/archives/{SUPPORT}/p{asked.ts.replace('.', '')}" in shown  # the thread's link
    containers = [b for b in post.blocks if b.get("type") == "container"]
    assert containers and all(c["default_collapsed"] for c in containers)
    assert "knowledge_search" in str(containers)  # the answer's own trace, its searches
    button = resolve_button(post)
    assert escalation is not None and escalation.message_ts == post.ts
    assert button is not None and button["value"] == str(escalation.id)
    assert escalation.run_id == run.run_id and escalation.specialist == "billing-agent"
    assert texts(slack, SUPPORT, asked.ts)[-1] == HANDED_OVER


async def test_asking_for_a_human_hands_over_and_the_bot_is_quiet_until_resolved(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """ "can I talk to a human please?" in the thread hands it over; Alice's next question there
    is not answered; once a person clicks "Mark resolved" the message says who resolved it
    (no button any more), the thread is told, and the bot answers there again."""
    with capture_logs() as logs:
        async with running_bot(
            slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
        ) as bot:
            asked = await answered(slack, bot, SUPPORT, mention=True)
            await says_in_thread(slack, bot, SUPPORT, asked.ts, "can I talk to a human please?")
            (post,) = escalation_posts(slack)
            assert QUESTION in everything_shown(post) and resolve_button(post) is not None
            assert texts(slack, SUPPORT, asked.ts)[-1] == HANDED_OVER

            await slack.user_says(
                user=ALICE,
                text="Also, can I pay by invoice?",
                channel=SUPPORT,
                channel_type="channel",
                thread_ts=asked.ts,
            )
            await slack.wait_for(
                lambda: any(e["event"] == "escalated_thread_quiet" for e in logs), timeout=10
            )
            assert len(powabase.runs) == 1  # neither message went to Powabase

            await resolve(slack, bot, post)
            resolved = slack.message(ESCALATIONS, post.ts)
            assert resolve_button(resolved) is None
            assert f"Resolved by <@{AGENT}>" in everything_shown(resolved)
            assert texts(slack, SUPPORT, asked.ts)[-1] == RESOLVED_NOTE

            before = bot.answerer.finished
            await slack.user_says(
                user=ALICE,
                text="Also, can I pay by invoice?",
                channel=SUPPORT,
                channel_type="channel",
                thread_ts=asked.ts,
            )
            await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    assert len(powabase.runs) == 2


async def test_a_dm_hand_over_asks_the_team_to_contact_the_user_directly(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """In the bot's DM (which the support team cannot see) the hand-over asks them to reply to
    the user directly, without a link, and the user is told so."""
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
    ) as bot:
        asked = await answered(slack, bot, DM)
        await says_in_thread(slack, bot, DM, asked.ts, "Talk to a person")
    (post,) = escalation_posts(slack)
    shown = everything_shown(post)
    assert "reply to them directly" in shown and "/archives/" not in shown
    assert QUESTION in shown
    assert texts(slack, DM, asked.ts)[-1] == HANDED_OVER_DM


async def test_the_answering_specialists_channel_is_used_when_set(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A workspace setting naming an escalation channel for the billing specialist sends a
    billing answer's hand-over there instead of the default channel."""
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
    ) as bot:
        await bot.store.save_workspace_settings(
            slack.workspace.team_id,
            {"escalation_channels": {"billing-agent": BILLING_ESCALATIONS}},
            updated_by=AGENT,
        )
        asked = await answered(slack, bot, SUPPORT, mention=True)
        await says_in_thread(slack, bot, SUPPORT, asked.ts, "escalate")
    assert len(escalation_posts(slack, BILLING_ESCALATIONS)) == 1
    assert not escalation_posts(slack, ESCALATIONS)


async def test_an_escalation_channel_the_bot_is_not_in_still_answers_the_user(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """The bot not being in the escalation channel gets the user a reply, an operator log line
    and a problem for the admins' App Home; the bot keeps answering in that thread."""
    slack.bot_not_in(ESCALATIONS)
    with capture_logs() as logs:
        async with running_bot(
            slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
        ) as bot:
            asked = await answered(slack, bot, SUPPORT, mention=True)
            await says_in_thread(slack, bot, SUPPORT, asked.ts, "real person please")
            assert texts(slack, SUPPORT, asked.ts)[-1] == UNREACHABLE
            (problem,) = bot.support.problems(slack.workspace.team_id)
            assert ESCALATIONS in problem and "/invite" in problem
            before = bot.answerer.finished
            await slack.user_says(
                user=ALICE,
                text="Can I pay by invoice?",
                channel=SUPPORT,
                channel_type="channel",
                thread_ts=asked.ts,
            )
            await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    (line,) = [e for e in logs if e["event"] == "escalation_channel_unreachable"]
    assert line["escalation_channel"] == ESCALATIONS and line["slack_error"] == "not_in_channel"
    assert len(powabase.runs) == 2  # not quiet: nobody received the hand-over


async def test_without_an_escalation_channel_the_user_is_told_to_contact_support(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """With no escalation channel configured, asking for a person gets a clear reply in the
    thread (and nothing is posted anywhere else)."""
    async with running_bot(slack, powabase, tmp_path) as bot:
        asked = await answered(slack, bot, DM)
        await says_in_thread(slack, bot, DM, asked.ts, "I want to speak to a human")
        assert bot.support.problems(slack.workspace.team_id)
    assert texts(slack, DM, asked.ts)[-1] == NO_CHANNEL
    assert {m.channel for m in slack.bot_messages()} == {DM}


async def test_buttons_from_before_a_restart_still_work(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """ "Talk to a person" offered before a restart hands over after it, and "Mark resolved"
    posted before another restart resolves after it: the store and the buttons' values hold
    everything."""
    settings = {"POWABOT_ESCALATION_CHANNEL": ESCALATIONS}
    async with running_bot(slack, powabase, tmp_path, **settings) as bot:
        asked = await answered(slack, bot, DM)
        rated = next(
            m
            for m in bot_replies(slack, DM, asked.ts)
            if any(b.get("type") == "context_actions" for b in m.blocks or [])
        )
        before = bot.feedback.handled
        await slack.click(
            user=ALICE, channel=DM, message_ts=rated.ts, action_id=FEEDBACK_ACTION, value="bad"
        )
        await slack.wait_for(lambda: bot.feedback.handled > before, timeout=10)
    offer = [e for e in slack.ephemerals if e.recipient == ALICE][-1]
    async with running_bot(slack, powabase, tmp_path, **settings) as bot:
        await slack.click(user=ALICE, channel=DM, message_ts=offer.ts, action_id=ESCALATE_ACTION)
        await slack.wait_for(lambda: bot.support.handled > 0, timeout=10)
    (post,) = escalation_posts(slack)
    assert texts(slack, DM, asked.ts)[-1] == HANDED_OVER_DM
    async with running_bot(slack, powabase, tmp_path, **settings) as bot:
        await resolve(slack, bot, post)
    assert resolve_button(slack.message(ESCALATIONS, post.ts)) is None
    assert texts(slack, DM, asked.ts)[-1] == RESOLVED_NOTE


async def test_talk_to_a_person_for_an_unknown_answer_is_explained(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A "Talk to a person" click naming an answer the store does not know (deleted) tells the
    clicker privately, and posts nothing."""
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
    ) as bot:
        asked = await answered(slack, bot, DM)
        answer = bot_replies(slack, DM, asked.ts)[0]
        await slack.click(
            user=ALICE,
            channel=DM,
            message_ts=answer.ts,
            action_id=ESCALATE_ACTION,
            value="1.000001",
            crafted=True,
        )
        await slack.wait_for(lambda: bot.support.handled > 0, timeout=10)
    assert [e.text for e in slack.ephemerals if e.recipient == ALICE][-1] == UNKNOWN_ANSWER
    assert not escalation_posts(slack)


async def test_a_mention_asking_for_a_person_before_any_question_is_handed_over(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """ "@powabot talk to a person" in a channel, with no conversation yet, is handed over with
    a link to that message (nothing is asked of Powabase) and answered in its thread."""
    async with running_bot(
        slack, powabase, tmp_path, POWABOT_ESCALATION_CHANNEL=ESCALATIONS
    ) as bot:
        asked = await slack.user_says(
            user=ALICE,
            text="talk to a person please",
            channel=SUPPORT,
            channel_type="channel",
            mention=True,
        )
        await slack.wait_for(lambda: bot.support.handled > 0, timeout=10)
    (post,) = escalation_posts(slack)
    assert f"/archives/{SUPPORT}/p{asked.ts.replace('.', '')}" in everything_shown(post)
    assert resolve_button(post) is not None and not powabase.runs
    assert texts(slack, SUPPORT, asked.ts) == [HANDED_OVER]
