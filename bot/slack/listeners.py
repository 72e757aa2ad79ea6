"""Slack listeners: which messages powabot answers, read into a typed `Question` at the edge.

- a DM to the bot (channel_type "im") is answered in a thread under it;
- an `app_mention` in a channel is answered in the mention's thread;
- a later message by the same user in a thread where they already talk to the bot continues;
- the bot's own messages, other bots, and edits/deletions are ignored.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.conversation import Answerer, Question
from bot.errors import StoreError

log = structlog.get_logger(__name__)

ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})
MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def strip_bot_mention(text: str, bot_user_id: str | None) -> str:
    """The question without the `<@UBOT>` that addressed it; line breaks kept (code, logs)."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if lines:
        lines[0] = " ".join(lines[0].split())  # "<@UBOT>  why…" leaves a ragged first line
    return "\n".join(lines).strip()


def _question(body: dict[str, Any], event: dict[str, Any], text: str) -> Question:
    return Question(
        event_id=str(body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}"),
        team_id=str(body.get("team_id") or event.get("team") or ""),
        channel_id=str(event["channel"]),
        user_id=str(event["user"]),
        text=text,
        ts=str(event["ts"]),
        thread_ts=event.get("thread_ts"),
        channel_type=event.get("channel_type"),
    )


def is_from_a_bot(event: dict[str, Any], bot_user_id: str | None) -> bool:
    return bool(
        event.get("bot_id")
        or event.get("bot_profile")
        or event.get("subtype") == "bot_message"
        or (bot_user_id and event.get("user") == bot_user_id)
    )


def register(app: AsyncApp, answerer: Answerer) -> None:
    """Wire the DM, mention and thread-follow-up listeners into `app`."""

    @app.event("app_mention")
    async def on_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if is_from_a_bot(event, context.bot_user_id) or "user" not in event:
            return
        with answerer.track():  # from here on, shutdown waits for this event
            text = strip_bot_mention(event.get("text", ""), context.bot_user_id)
            await answerer.answer(_question(body, event, text or "Hello"))

    @app.event("message")
    async def on_message(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if event.get("subtype") not in ANSWERED_SUBTYPES or "user" not in event:
            return
        if is_from_a_bot(event, context.bot_user_id):
            return
        with answerer.track():  # from here on, shutdown waits for this event
            await _on_user_message(answerer, body, event, context.bot_user_id)


async def _on_user_message(
    answerer: Answerer, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None
) -> None:
    """A human's message: a DM, or maybe a follow-up in a thread they started with us."""
    text = event.get("text", "")
    if event.get("channel_type") == "im":
        await answerer.answer(_question(body, event, strip_bot_mention(text, None)))
        return
    thread_ts = event.get("thread_ts")
    if not thread_ts:
        return  # top-level channel chatter is not for us unless it mentions the bot
    if bot_user_id and f"<@{bot_user_id}" in text:
        return  # the app_mention listener answers this one
    q = _question(body, event, strip_bot_mention(text, bot_user_id))
    try:
        known = await answerer.store.get_session(q.key) is not None
    except StoreError as exc:  # cannot tell; staying out of a stranger's thread is safer
        log.error("thread_lookup_failed", error=str(exc))
        return
    if not known:
        return  # someone else's thread, or a thread this user never asked us in
    await answerer.answer(q)
