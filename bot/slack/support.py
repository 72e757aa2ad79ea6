"""The support loop's Slack side: a person on request, a fresh start, and their buttons.

Actions (each payload read at the edge into a `Click`; everything needed is in the button's
value or the store, so a button of a message posted before a restart still works):

* `powabot_escalate` ("Talk to a person", value: the rated answer's `reply_ts`): the hand-over
  (`bot.escalation.HandOver`), with that answer.
* `powabot_resolve` ("Mark resolved" on the escalation message, value: the escalation id): the
  escalation is closed in the store (first resolver wins), the message is edited to say who
  resolved it (no button any more), and the user's thread is told the bot answers again.
* `powabot_reset` ("New conversation" under an answer, value: that answer's `reply_ts`): a fresh
  start for the clicking user in that answer's thread (as the message `reset` does).

A fresh start (`reset_thread`) maps the thread to a new Powabase session id
(`store.reset_session`); the old mapping stays in the store as history. In the bot's DM every
top-level message starts its own thread (`Question.reply_thread_ts`), so `reset` works in a
thread; a top-level `reset` in the DM (or a top-level mention) gets a line saying so.

Every Slack write goes through the publisher's `SlackCaller` (`SupportWriter`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import structlog
from slack_bolt.async_app import AsyncApp

from bot.errors import SlackDeliveryError, StoreError
from bot.escalation import HandOver, HandOverResult, Problems
from bot.render.escalation import render_resolved
from bot.render.message import SlackMessage
from bot.settings import Settings
from bot.slack.budget import BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient
from bot.slack.writers import CALL_WAIT, SlackWriter, ephemeral_args, failure, reply_args
from bot.store.base import SessionStore, ThreadKey, new_agent_session_id

log = structlog.get_logger(__name__)

_TS = re.compile(r"\d+\.\d+")  # a Slack message ts

ESCALATE_ACTION = "powabot_escalate"
RESOLVE_ACTION = "powabot_resolve"
RESET_ACTION = "powabot_reset"

FRESH_START = "Starting fresh — your next message begins a new conversation."
RESET_FAILED = "I couldn't start over just now; please try again in a moment."
NOTHING_TO_RESET = "There's nothing to reset here yet: just ask your question."
RESET_HOW = (
    "To start over, say `reset` in the thread of the conversation you want to start again"
    " (every new message to me already starts a new conversation)."
)
RESOLVED_NOTE = "The support team marked this as resolved. I'll answer here again."
ALREADY_RESOLVED = "That escalation is already resolved."

READS_PER_SECOND = 45 / 60  # conversations.replies: Tier 3, per workspace
READ_BURST = 3.0
REPLY_PAGES = 5  # pages of 200 a thread is read for the bot's messages


class SupportWriter(SlackWriter):
    """The support loop's Slack calls, through the publisher's caller and budgets.

    `post` and `update` must happen (they wait out 429s and retry 5xx; a refusal raises
    SlackDeliveryError); `say` and `tell` are reliable too but never raise (False when lost);
    `permalink` (waiting at most `CALL_WAIT` for its budget) and `bot_messages` are best effort
    (None / [] when Slack would not answer).
    """

    async def post(self, team_id: str, channel_id: str, message: SlackMessage) -> str:
        args: dict[str, Any] = {
            "channel": channel_id,
            "text": message.text,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if message.blocks is not None:
            args["blocks"] = message.blocks
        sent = await self.caller.call_reliably(
            "chat.postMessage", self.budgets.posts(channel_id), **args
        )
        return str(sent.get("ts") or "")

    async def update(self, team_id: str, channel_id: str, ts: str, message: SlackMessage) -> None:
        args: dict[str, Any] = {"channel": channel_id, "ts": ts, "text": message.text}
        if message.blocks is not None:
            args["blocks"] = message.blocks
        await self.caller.call_reliably("chat.update", self.budgets.edits(team_id), **args)

    async def say(self, team_id: str, channel_id: str, thread_ts: str, text: str) -> bool:
        try:
            await self.caller.call_reliably(
                "chat.postMessage",
                self.budgets.posts(channel_id),
                **reply_args(channel_id, thread_ts, text),
            )
        except SlackDeliveryError as exc:
            log.warning("support_reply_failed", method=exc.method, slack_error=exc.error)
            return False
        return True

    async def tell(
        self, team_id: str, channel_id: str, user_id: str, text: str, thread_ts: str | None
    ) -> bool:
        args = ephemeral_args(channel_id, user_id, SlackMessage(text), thread_ts)
        try:
            await self.caller.call_reliably(
                "chat.postEphemeral", self._tier4("ephemeral", team_id), **args
            )
        except SlackDeliveryError as exc:
            log.warning("support_ephemeral_failed", slack_error=exc.error)
            return False
        return True

    async def permalink(self, team_id: str, channel_id: str, ts: str) -> str | None:
        bucket = self._tier4("permalink", team_id)
        try:
            if not await self.caller.acquire(bucket, max_wait=CALL_WAIT):
                return None
            found = await self.caller.read(
                "chat.getPermalink", bucket, channel=channel_id, message_ts=ts
            )
        except (RateLimited, Transient, SlackDeliveryError) as exc:
            log.info("permalink_unavailable", slack_error=failure(exc))
            return None
        link = found.get("permalink")
        return link if isinstance(link, str) and link else None

    async def bot_messages(
        self, team_id: str, channel_id: str, thread_ts: str
    ) -> list[dict[str, Any]]:
        bucket = self.budgets.bucket(f"reads:{team_id}", READS_PER_SECOND, READ_BURST)
        found: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(REPLY_PAGES):
            try:
                await self.caller.acquire(bucket, max_wait=math.inf)
                page = await self.caller.read(
                    "conversations.replies",
                    bucket,
                    channel=channel_id,
                    ts=thread_ts,
                    limit=200,
                    **({"cursor": cursor} if cursor else {}),
                )
            except (RateLimited, Transient, SlackDeliveryError) as exc:
                log.info("thread_unreadable", slack_error=failure(exc))
                break
            for m in page.get("messages") or []:
                if isinstance(m, dict) and m.get("bot_id") and isinstance(m.get("ts"), str):
                    found.append(m)
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                break
        return found


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Click:
    """A click on a button of ours (the support buttons, the feedback buttons), read out of a
    `block_actions` payload at the edge."""

    team_id: str
    channel_id: str
    user_id: str  # who clicked
    value: str  # the clicked button's value; "" when it had none
    message_ts: str | None  # the message holding the button
    thread_ts: str | None  # that message's thread, when Slack says
    text: str  # that message's text (not sent for an ephemeral message's click)
    blocks: list[dict[str, Any]] | None

    @property
    def in_dm(self) -> bool:
        return self.channel_id.startswith("D")

    @classmethod
    def read(cls, body: dict[str, Any]) -> Click | None:
        """None when the payload lacks the user or the channel."""
        actions = body.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else {}
        value = action.get("value") if isinstance(action, dict) else None
        user, team = _dict(body.get("user")), _dict(body.get("team"))
        container, channel = _dict(body.get("container")), _dict(body.get("channel"))
        message = _dict(body.get("message"))
        channel_id = channel.get("id") or container.get("channel_id")
        user_id = user.get("id")
        if not (
            isinstance(channel_id, str) and channel_id and isinstance(user_id, str) and user_id
        ):
            return None
        message_ts = container.get("message_ts") or message.get("ts")
        thread_ts = message.get("thread_ts") or container.get("thread_ts")
        blocks = message.get("blocks")
        return cls(
            team_id=str(team.get("id") or user.get("team_id") or body.get("team_id") or ""),
            channel_id=channel_id,
            user_id=user_id,
            value=value if isinstance(value, str) else "",
            message_ts=str(message_ts) if message_ts else None,
            thread_ts=str(thread_ts) if thread_ts else None,
            text=str(message.get("text") or ""),
            blocks=[b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else None,
        )


class Support:
    """Escalations, fresh starts and what admins should know, for the listeners and the App
    Home (`problems`)."""

    def __init__(
        self, store: SessionStore, writer: SupportWriter, *, default_channel: str | None
    ) -> None:
        self.store = store
        self.writer = writer
        self.problem_log = Problems()
        self.hand_over = HandOver(
            store, writer, default_channel=default_channel, problems=self.problem_log
        )
        self.handled = 0  # support actions and messages handled to the end (tests wait on it)

    @classmethod
    def build(
        cls, settings: Settings, store: SessionStore, caller: SlackCaller, budgets: BudgetBook
    ) -> Support:
        return cls(
            store,
            SupportWriter(caller, budgets),
            default_channel=settings.POWABOT_ESCALATION_CHANNEL,
        )

    def problems(self, team_id: str) -> list[str]:
        """What an admin must fix for the support loop to work in this workspace (e.g. the
        escalation channel the bot is not in), oldest first; [] when all is well."""
        return self.problem_log.of(team_id)

    # --- from messages (the listeners) ---------------------------------------------------------

    async def first_time(self, event_id: str) -> bool:
        """True once per Slack event id (a redelivered message is not handled twice); a store
        that cannot tell counts as the first time."""
        try:
            first = await self.store.claim_event(event_id)
        except StoreError as exc:
            log.error("event_claim_failed", error=str(exc))
            return True
        if not first:
            log.info("event_duplicate_ignored", event_id=event_id)
        return first

    async def escalated(self, key: ThreadKey) -> bool:
        """The conversation is with the support team: the bot stays quiet in it. A store that
        cannot tell counts as not escalated (an answer beats silence)."""
        try:
            return await self.store.active_escalation(key) is not None
        except StoreError as exc:
            log.error("escalation_lookup_failed", error=str(exc))
            return False

    async def escalate_from_message(self, key: ThreadKey, *, in_dm: bool) -> HandOverResult:
        try:
            return await self.hand_over.from_message(key, in_dm=in_dm)
        finally:
            self.handled += 1

    async def reset_thread(self, key: ThreadKey) -> bool:
        """A fresh start for this user in this thread; the user is told. True when there was a
        conversation to reset."""
        try:
            return await self._reset(key)
        finally:
            self.handled += 1

    async def _reset(self, key: ThreadKey) -> bool:
        try:
            session = await self.store.reset_session(key, new_agent_session_id())
        except StoreError as exc:
            log.error("session_reset_failed", error=str(exc))
            await self.writer.tell(
                key.team_id, key.channel_id, key.user_id, RESET_FAILED, key.thread_ts
            )
            return False
        if session is None:
            log.info("session_reset_nothing", thread_ts=key.thread_ts)
            await self.writer.tell(
                key.team_id, key.channel_id, key.user_id, NOTHING_TO_RESET, key.thread_ts
            )
            return False
        log.info(
            "session_reset", thread_ts=key.thread_ts, agent_session_id=session.agent_session_id
        )
        await self.writer.say(key.team_id, key.channel_id, key.thread_ts, FRESH_START)
        return True

    async def reset_help(
        self, team_id: str, channel_id: str, user_id: str, thread_ts: str | None
    ) -> None:
        """A `reset` outside any conversation's thread: how to use it (only they see it)."""
        try:
            await self.writer.tell(team_id, channel_id, user_id, RESET_HOW, thread_ts)
        finally:
            self.handled += 1

    async def refuse(
        self, team_id: str, channel_id: str, user_id: str, text: str, thread_ts: str | None
    ) -> None:
        """The bot may not answer here: one short explanation only the user sees."""
        await self.writer.tell(team_id, channel_id, user_id, text, thread_ts)

    # --- from buttons ----------------------------------------------------------------------------

    async def on_escalate(self, click: Click) -> HandOverResult:
        """ "Talk to a person": hand over the answer the button names (its `reply_ts`)."""
        return await self.hand_over.from_answer(
            click.team_id,
            click.channel_id,
            click.value,
            click.user_id,
            in_dm=click.in_dm,
            thread_ts=click.thread_ts,
        )

    async def on_resolve(self, click: Click) -> bool:
        """ "Mark resolved": close the escalation, edit its message, tell the user's thread."""
        try:
            escalation_id = int(click.value)
        except ValueError:
            log.warning("escalation_resolve_bad_value", value=click.value[:40])
            return False
        try:
            resolved = await self.store.resolve_escalation(escalation_id, resolved_by=click.user_id)
        except StoreError as exc:
            log.error("escalation_resolve_failed", error=str(exc))
            await self.writer.tell(
                click.team_id,
                click.channel_id,
                click.user_id,
                "I couldn't mark it resolved just now; please try again in a moment.",
                click.thread_ts,
            )
            return False
        if resolved is None:
            log.info("escalation_resolve_again", escalation_id=escalation_id)
            await self.writer.tell(
                click.team_id, click.channel_id, click.user_id, ALREADY_RESOLVED, click.thread_ts
            )
            return False
        log.info("escalation_resolved", escalation_id=escalation_id, resolved_by=click.user_id)
        ts = click.message_ts or resolved.message_ts
        if ts:
            try:
                edited = render_resolved(click.text, click.blocks, click.user_id)
                await self.writer.update(click.team_id, click.channel_id, ts, edited)
            except SlackDeliveryError as exc:
                log.warning("escalation_message_not_edited", slack_error=exc.error)
        key = resolved.key
        await self.writer.say(key.team_id, key.channel_id, key.thread_ts, RESOLVED_NOTE)
        return True

    async def on_reset(self, click: Click) -> bool:
        """ "New conversation" under an answer: a fresh start for the clicker in that answer's
        thread (the message's thread as Slack reports it, else the answer record's)."""
        thread_ts = click.thread_ts
        if thread_ts is None:
            for reply_ts in (click.value, click.message_ts):
                if not reply_ts or not _TS.fullmatch(reply_ts):
                    continue
                try:
                    record = await self.store.get_answer(click.team_id, click.channel_id, reply_ts)
                except StoreError as exc:
                    log.error("reset_answer_lookup_failed", error=str(exc))
                    break
                if record is not None:
                    thread_ts = record.key.thread_ts
                    break
        if thread_ts is None:
            log.warning("reset_thread_unknown")
            await self.writer.tell(click.team_id, click.channel_id, click.user_id, RESET_HOW, None)
            return False
        return await self._reset(
            ThreadKey(click.team_id, click.channel_id, thread_ts, click.user_id)
        )


def register(
    app: AsyncApp,
    support: Support,
    track: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> None:
    """Wire the support buttons into `app`; `track` makes shutdown wait for a click's work."""

    @app.action(ESCALATE_ACTION)
    async def on_escalate(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        with track():
            await _handle(support, body, support.on_escalate)

    @app.action(RESOLVE_ACTION)
    async def on_resolve(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        with track():
            await _handle(support, body, support.on_resolve)

    @app.action(RESET_ACTION)
    async def on_reset(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        with track():
            await _handle(support, body, support.on_reset)


async def _handle(
    support: Support, body: dict[str, Any], step: Callable[[Click], Awaitable[object]]
) -> None:
    try:
        click = Click.read(body)
        if click is None or not click.value:
            log.warning("support_click_unreadable")
            return
        structlog.contextvars.bind_contextvars(team=click.team_id, channel=click.channel_id)
        try:
            await step(click)
        finally:
            structlog.contextvars.unbind_contextvars("team", "channel")
    finally:
        support.handled += 1
