"""Clicks on the feedback buttons under an answer: stored as a rating, thanked in private.

The clicked message is the answer's last message; its ts, channel and team come with the click
(`block_actions`: `container.message_ts` / `message.ts`, `channel.id`, `team.id`), and the
answer was kept in the store under them when it was delivered (`AnswerRecord`). So a click on
a message from before a restart works like any other: nothing is held in memory.

A click is acked at once. Then the answer is looked up and the rating stored (the same user
clicking again replaces their rating); the clicker gets a message only they see, in that
thread: thanks, and after a negative rating a "Talk to a person" button. A click on an answer
the store does not know (any more: its conversation was deleted) is dropped with a
`feedback_dropped` log line, and the clicker is told the conversation cannot be found. Every
Slack write goes through the publisher's `SlackCaller` (`EphemeralWriter`).
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.errors import StoreError
from bot.render.feedback import FEEDBACK_ACTION, NOT_FOUND, NOT_SAVED, rating_of, thanks
from bot.render.message import SlackMessage
from bot.slack.budget import BudgetBook
from bot.slack.calls import SlackCaller
from bot.slack.support import Click
from bot.slack.writers import SlackWriter, ephemeral_args
from bot.store.base import Feedback, SessionStore

log = structlog.get_logger(__name__)

DROPPED = "unknown or deleted conversation"
UNREADABLE = "click without message, channel or user"


class EphemeralWriter(SlackWriter):
    """Messages only one user sees (chat.postEphemeral), through the publisher's caller and
    the workspace's Tier-4 budget. Best effort: waits at most `CALL_WAIT` for the budget, is
    tried once, answers whether Slack took it; failures are logged, never raised."""

    async def tell(
        self,
        team_id: str,
        channel_id: str,
        user_id: str,
        message: SlackMessage,
        thread_ts: str | None,
    ) -> bool:
        return await self._try(
            "chat.postEphemeral",
            self._tier4("ephemeral", team_id),
            event="ephemeral",
            **ephemeral_args(channel_id, user_id, message, thread_ts),
        )


class FeedbackHandler:
    """What a click on the feedback buttons does (see the module docstring)."""

    def __init__(self, store: SessionStore, writer: EphemeralWriter) -> None:
        self.store = store
        self.writer = writer
        self.handled = 0  # clicks handled to the end (tests wait on it)

    async def rated(self, click: Click) -> None:
        message_ts = click.message_ts  # the clicked message
        if message_ts is None:
            log.info("feedback_ignored", reason=UNREADABLE)
            return
        rating = rating_of(click.value)
        if rating is None:  # not one of our two values: a forged or foreign payload
            log.info("feedback_ignored", reason="unknown value", channel=click.channel_id)
            return
        try:
            answer = await self.store.get_answer(click.team_id, click.channel_id, message_ts)
            stored = answer is not None and await self.store.record_feedback(
                Feedback(
                    team_id=click.team_id,
                    channel_id=click.channel_id,
                    reply_ts=answer.reply_ts,
                    rater_id=click.user_id,
                    rating=rating,
                )
            )
        except StoreError as exc:
            log.error("feedback_store_failed", error=str(exc), channel=click.channel_id)
            await self._tell(click, SlackMessage(NOT_SAVED), click.thread_ts)
            return
        if answer is None or not stored:
            log.info(
                "feedback_dropped",
                reason=DROPPED,
                channel=click.channel_id,
                message_ts=message_ts,
            )
            await self._tell(click, SlackMessage(NOT_FOUND), click.thread_ts)
            return
        log.info(
            "feedback_recorded",
            rating=rating,
            run_id=answer.run_id,
            channel=click.channel_id,
            reply_ts=answer.reply_ts,
        )
        thread_ts = answer.key.thread_ts or click.thread_ts
        await self._tell(click, thanks(rating, answer.reply_ts), thread_ts)

    async def _tell(self, click: Click, message: SlackMessage, thread_ts: str | None) -> None:
        await self.writer.tell(click.team_id, click.channel_id, click.user_id, message, thread_ts)


def register_feedback(
    app: AsyncApp, store: SessionStore, caller: SlackCaller, budgets: BudgetBook
) -> FeedbackHandler:
    """Wire the feedback buttons' listener into `app`; returns its handler."""
    handler = FeedbackHandler(store, EphemeralWriter(caller, budgets))

    @app.action(FEEDBACK_ACTION)
    async def on_feedback(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 seconds, before any store or Slack call
        try:
            click = Click.read(body)
            if click is None:
                log.info("feedback_ignored", reason=UNREADABLE)
                return
            await handler.rated(click)
        except Exception:  # a click never takes the listener down; the clicker saw the ack
            log.exception("feedback_click_crashed")
        finally:
            handler.handled += 1

    return handler
