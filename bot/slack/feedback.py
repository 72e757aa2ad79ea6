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

from dataclasses import dataclass
from typing import Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.errors import SlackDeliveryError, StoreError
from bot.render.feedback import FEEDBACK_ACTION, NOT_FOUND, NOT_SAVED, rating_of, thanks
from bot.render.message import SlackMessage
from bot.slack.assistant import CALL_WAIT, TIER4_BURST, TIER4_PER_SECOND
from bot.slack.budget import BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient
from bot.store.base import Feedback, SessionStore

log = structlog.get_logger(__name__)

DROPPED = "unknown or deleted conversation"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Click:
    """One click on a button of a message, read from a `block_actions` payload at the edge."""

    team_id: str
    channel_id: str
    message_ts: str  # the clicked message
    thread_ts: str | None  # its thread, when Slack says
    user_id: str  # who clicked
    value: str  # the clicked button's value

    @classmethod
    def read(cls, body: dict[str, Any]) -> Click | None:
        """The click in `body`, or None when it lacks the message, channel or user."""
        container, message = _dict(body.get("container")), _dict(body.get("message"))
        channel, team, user = (
            _dict(body.get("channel")),
            _dict(body.get("team")),
            _dict(body.get("user")),
        )
        actions = body.get("actions")
        first = _dict(actions[0]) if isinstance(actions, list) and actions else {}
        channel_id = _text(channel.get("id")) or _text(container.get("channel_id"))
        message_ts = _text(container.get("message_ts")) or _text(message.get("ts"))
        user_id = _text(user.get("id"))
        if not (channel_id and message_ts and user_id):
            return None
        thread_ts = _text(message.get("thread_ts")) or _text(container.get("thread_ts"))
        return cls(
            team_id=_text(team.get("id")) or _text(user.get("team_id")),
            channel_id=channel_id,
            message_ts=message_ts,
            thread_ts=thread_ts or None,
            user_id=user_id,
            value=_text(first.get("value")),
        )


class EphemeralWriter:
    """Messages only one user sees (chat.postEphemeral), through the publisher's caller and
    the workspace's Tier-4 budget. Best effort: waits at most `CALL_WAIT` for the budget, is
    tried once, answers whether Slack took it; failures are logged, never raised."""

    def __init__(self, caller: SlackCaller, budgets: BudgetBook) -> None:
        self.caller = caller
        self.budgets = budgets

    async def tell(
        self,
        team_id: str,
        channel_id: str,
        user_id: str,
        message: SlackMessage,
        thread_ts: str | None,
    ) -> bool:
        bucket = self.budgets.bucket(f"ephemeral:{team_id}", TIER4_PER_SECOND, TIER4_BURST)
        args: dict[str, Any] = {"channel": channel_id, "user": user_id, "text": message.text}
        if message.blocks is not None:
            args["blocks"] = message.blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        try:
            if not await self.caller.acquire(bucket, max_wait=CALL_WAIT):
                log.info("ephemeral_skipped", reason="budget")
                return False
            await self.caller.call("chat.postEphemeral", bucket, **args)
        except (RateLimited, Transient, SlackDeliveryError) as exc:
            error = exc.error if isinstance(exc, SlackDeliveryError) else type(exc).__name__
            log.info("ephemeral_failed", error=error)
            return False
        return True


class FeedbackHandler:
    """What a click on the feedback buttons does (see the module docstring)."""

    def __init__(self, store: SessionStore, writer: EphemeralWriter) -> None:
        self.store = store
        self.writer = writer
        self.handled = 0  # clicks handled to the end (tests wait on it)

    async def rated(self, click: Click) -> None:
        rating = rating_of(click.value)
        if rating is None:  # not one of our two values: a forged or foreign payload
            log.info("feedback_ignored", reason="unknown value", channel=click.channel_id)
            return
        try:
            answer = await self.store.get_answer(click.team_id, click.channel_id, click.message_ts)
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
                message_ts=click.message_ts,
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
                log.info("feedback_ignored", reason="click without message, channel or user")
                return
            await handler.rated(click)
        except Exception:  # a click never takes the listener down; the clicker saw the ack
            log.exception("feedback_click_crashed")
        finally:
            handler.handled += 1

    return handler
