"""What the end-to-end tests ask the bot, and how they read what a Slack user ends up seeing."""

from __future__ import annotations

from typing import Any

from bot.render import render_answer
from bot.state import AnswerState, Phase

ALICE = "U0ALICE"


def expected_text(answer: str) -> str:
    """What the user must finally see for an upstream answer (single-message answers)."""
    (message,) = render_answer(AnswerState(text=answer, phase=Phase.DONE))
    return message.text


def bot_replies(slack: Any, channel: str, thread_ts: str) -> list[Any]:
    """The bot's messages in a thread, oldest first."""
    return [m for m in slack.thread(channel, thread_ts) if m.is_bot]


async def ask(slack: Any, bot: Any, channel: str, text: str, *, mention: bool = False) -> Any:
    """Alice asks in a DM (or @-mentions the bot in a channel); returns once it is answered."""
    before = bot.answerer.finished
    if mention:
        msg = await slack.user_says(
            user=ALICE, text=text, channel=channel, channel_type="channel", mention=True
        )
    else:
        msg = await slack.user_says(user=ALICE, text=text, channel=channel)
    await slack.wait_for(lambda: bot.answerer.finished > before, timeout=30)
    return msg
