"""Slack listeners: which messages powabot answers, read into a typed `Question` at the edge.

- a DM to the bot (channel_type "im") is answered in a thread under it;
- an `app_mention` in a channel is answered in the mention's thread;
- a later message by the same user in a thread where they already talk to the bot continues;
- the bot's own messages, other bots, and edits/deletions are ignored.

Stop: a message that is only the word "stop" (any case, trailing "." or "!", after an optional
mention of the bot) is not answered: it stops that user's running answer in that thread (in a
DM outside any thread: in that DM), wherever the bot would have answered it; when nothing is
running the user is told so in a message only they see. Slack's own Stop button on an agent
session (`agent_session_stopped`) does the same, silently.

Before a message the bot would answer is answered, in this order (`_handled_before_answer`):
stop (above) → a fresh start (`reset` / "new conversation" alone: `bot.slack.support`; outside
a conversation's thread, e.g. a top-level DM, the user is told how it works, since every
top-level DM message starts its own thread) → a request for a person (`bot.escalation`, a
whole-message phrase: the hand-over) → quiet while the thread is escalated (a person has it;
logged, nothing said) → who may ask here (`access.refusal`: one ephemeral explanation) → the
answer.

The DM-opened and assistant-thread listeners are in `bot.slack.assistant`; the support buttons'
in `bot.slack.support`.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.conversation import Question
from bot.errors import StoreError
from bot.escalation import is_human_request
from bot.slack import assistant as assistant_surface
from bot.slack import support as support_surface
from bot.slack.assistant import Assistant
from bot.slack.support import Support
from bot.store import SessionStore

log = structlog.get_logger(__name__)

ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})
MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
STOP = re.compile(r"stop[.!]*", re.IGNORECASE)
RESET = re.compile(r"(?:reset|(?:start (?:a )?)?new conversation|start over)[.!]*", re.IGNORECASE)


class Answers(Protocol):
    """What the listeners need of `bot.conversation.Answerer`."""

    store: SessionStore

    def track(self) -> AbstractContextManager[None]: ...

    async def answer(self, q: Question) -> object: ...

    async def stop(
        self, team_id: str, channel_id: str, thread_ts: str | None, user_id: str
    ) -> bool:
        """Stop that user's running answers there; True when there were any."""
        ...


class Gate(Protocol):
    """Who may ask the bot what, where (`bot.slack.access.Access`)."""

    async def refusal(self, q: Question, *, mention: bool) -> str | None:
        """None: the bot may answer `q`; else the short explanation for the asker."""
        ...


def strip_bot_mention(text: str, bot_user_id: str | None) -> str:
    """The question without the `<@UBOT>` that addressed it; line breaks kept (code, logs)."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if lines:
        lines[0] = " ".join(lines[0].split())  # "<@UBOT>  why…" leaves a ragged first line
    return "\n".join(lines).strip()


def is_stop(text: str, bot_user_id: str | None) -> bool:
    """The message is only "stop" ("Stop.", "STOP!", "<@UBOT> stop"), nothing else."""
    return STOP.fullmatch(strip_bot_mention(text, bot_user_id)) is not None


def is_reset(text: str, bot_user_id: str | None) -> bool:
    """The message is only "reset" / "new conversation" / "start over" (any case, trailing
    "." or "!", after an optional mention of the bot)."""
    return RESET.fullmatch(" ".join(strip_bot_mention(text, bot_user_id).split())) is not None


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


@dataclass(frozen=True)
class StopRequest:
    """A user asked to stop their answer in a thread (None: in a DM, outside any thread)."""

    team_id: str
    channel_id: str
    thread_ts: str | None
    user_id: str

    @classmethod
    def read(cls, body: dict[str, Any], event: dict[str, Any]) -> StopRequest | None:
        """From a message or `agent_session_stopped` event; None when one lacks its ids."""
        channel, user, thread_ts = event.get("channel"), event.get("user"), event.get("thread_ts")
        if not (isinstance(channel, str) and channel and isinstance(user, str) and user):
            return None
        return cls(
            team_id=str(body.get("team_id") or event.get("team") or ""),
            channel_id=channel,
            thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts else None,
            user_id=user,
        )


def is_from_a_bot(event: dict[str, Any], bot_user_id: str | None) -> bool:
    return bool(
        event.get("bot_id")
        or event.get("bot_profile")
        or event.get("subtype") == "bot_message"
        or (bot_user_id and event.get("user") == bot_user_id)
    )


def register(
    app: AsyncApp,
    answerer: Answers,
    assistant: Assistant,
    support: Support,
    access: Gate | None = None,
) -> None:
    """Wire the DM, mention, thread-follow-up and stop listeners (and the assistant surface's
    and the support buttons') into `app`. With `access`, questions the workspace's settings
    do not allow get its explanation instead of an answer."""
    gates = Gates(support, access)

    @app.event("app_mention")
    async def on_mention(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if is_from_a_bot(event, context.bot_user_id) or "user" not in event:
            return
        if is_stop(event.get("text", ""), context.bot_user_id):
            await _stop(answerer, assistant, body, event, tell=True)
            return
        with answerer.track():  # from here on, shutdown waits for this event
            text = strip_bot_mention(event.get("text", ""), context.bot_user_id)
            q = _question(body, event, text or "Hello")
            if await gates.handled_before_answer(q, context.bot_user_id, mention=True):
                return
            await answerer.answer(q)

    @app.event("message")
    async def on_message(
        body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        if event.get("subtype") not in ANSWERED_SUBTYPES or "user" not in event:
            return
        if is_from_a_bot(event, context.bot_user_id):
            return
        with answerer.track():  # from here on, shutdown waits for this event
            await _on_user_message(answerer, assistant, gates, body, event, context.bot_user_id)

    @app.event("agent_session_stopped")
    async def on_session_stopped(body: dict[str, Any], event: dict[str, Any]) -> None:
        """Slack's Stop button: Slack already stopped the streams; nothing to say when no
        answer is running any more (it may just have finished)."""
        await _stop(answerer, assistant, body, event, tell=False)

    assistant_surface.register(app, assistant)
    support_surface.register(app, support, answerer.track)


class Gates:
    """What a message the bot would answer may be instead: a fresh start, a request for a
    person, a message in an escalated thread, or a question not allowed here."""

    def __init__(self, support: Support, access: Gate | None) -> None:
        self.support = support
        self.access = access

    async def handled_before_answer(
        self, q: Question, bot_user_id: str | None, *, mention: bool
    ) -> bool:
        """True when `q` was handled here (the caller must not answer it)."""
        in_dm = q.channel_type == "im"
        if is_reset(q.text, bot_user_id):
            if not await self.support.first_time(q.event_id):
                return True  # a redelivery: handled already
            if q.thread_ts is None:  # a top-level message: there is no conversation to reset
                where = None if in_dm else q.ts
                await self.support.reset_help(q.team_id, q.channel_id, q.user_id, where)
            else:
                await self.support.reset_thread(q.key)
            return True
        if is_human_request(strip_bot_mention(q.text, bot_user_id)):
            if await self.support.first_time(q.event_id):
                log.info("human_requested", thread_ts=q.reply_thread_ts)
                await self.support.escalate_from_message(q.key, in_dm=in_dm)
            return True
        if await self.support.escalated(q.key):
            log.info("escalated_thread_quiet", channel=q.channel_id, thread_ts=q.reply_thread_ts)
            return True
        if self.access is not None:
            refusal = await self.access.refusal(q, mention=mention)
            if refusal is not None:
                if await self.support.first_time(q.event_id):
                    await self.support.refuse(
                        q.team_id, q.channel_id, q.user_id, refusal, q.thread_ts
                    )
                return True
        return False


async def _stop(
    answerer: Answers,
    assistant: Assistant,
    body: dict[str, Any],
    event: dict[str, Any],
    *,
    tell: bool,
) -> bool:
    """Stop the asking user's answer; True when one was running. With `tell`, a user whose
    answer had already ended (or never ran) is told so."""
    r = StopRequest.read(body, event)
    if r is None:
        return False
    stopped = await answerer.stop(r.team_id, r.channel_id, r.thread_ts, r.user_id)
    log.info("stop_requested", channel=r.channel_id, thread_ts=r.thread_ts, stopped=stopped)
    if not stopped and tell:
        await assistant.nothing_to_stop(r.team_id, r.channel_id, r.user_id, r.thread_ts)
    return stopped


async def _on_user_message(
    answerer: Answers,
    assistant: Assistant,
    gates: Gates,
    body: dict[str, Any],
    event: dict[str, Any],
    bot_user_id: str | None,
) -> None:
    """A human's message: a DM, or maybe a follow-up in a thread they started with us."""
    text = event.get("text", "")
    if event.get("channel_type") == "im":
        if is_stop(text, bot_user_id):
            await _stop(answerer, assistant, body, event, tell=True)
            return
        q = _question(body, event, strip_bot_mention(text, None))
        if await gates.handled_before_answer(q, bot_user_id, mention=False):
            return
        await answerer.answer(q)
        return
    thread_ts = event.get("thread_ts")
    if not thread_ts:
        return  # top-level channel chatter is not for us unless it mentions the bot
    if bot_user_id and f"<@{bot_user_id}" in text:
        return  # the app_mention listener answers this one
    q = _question(body, event, strip_bot_mention(text, bot_user_id))
    stop = is_stop(text, bot_user_id)
    # A stop first: the user's first answer here may still be running (no session stored yet).
    if stop and await _stop(answerer, assistant, body, event, tell=False):
        return
    try:
        known = await answerer.store.get_session(q.key) is not None
    except StoreError as exc:  # cannot tell; staying out of a stranger's thread is safer
        log.error("thread_lookup_failed", error=str(exc))
        return
    if not known:
        return  # someone else's thread, or a thread this user never asked us in
    if stop:  # in a thread of ours, with nothing of theirs running
        r = StopRequest.read(body, event)
        if r is not None:
            await assistant.nothing_to_stop(r.team_id, r.channel_id, r.user_id, r.thread_ts)
        return
    if await gates.handled_before_answer(q, bot_user_id, mention=False):
        return
    await answerer.answer(q)
