"""Escalation to a person: which messages ask for one, where the hand-over goes, and the hand-over.

**Asking for a person.** Either the "Talk to a person" button (offered after a negative rating;
its value is the rated answer's `reply_ts`) or a message whose whole intent is that: "talk to a
human", "can I speak to someone please?", "real person", "human please", "escalate",
"contact support"… (`is_human_request`). A message that merely mentions a human ("how do I add
a human reviewer?", "how do I contact support?", a question for the knowledge base) is not one:
the whole message, after a polite lead-in and before a polite tail, must be the request.

**Where it goes.** The escalation channel of the specialist that answered, from the workspace's
settings (`{"escalation_channels": {"billing-agent": "C…"}}`, edited in the App Home), else
`POWABOT_ESCALATION_CHANNEL`. None configured: the user is told to contact the support team
directly, and the operator log says so.

**The hand-over** (`HandOver`): the escalation is stored (`open_escalation`), a message with
the user, the question, the answer given, its sources, a link to the user's thread and the
collapsed trace is posted in that channel with a "Mark resolved" button (its value: the
escalation id, so a click after a restart still works), and the user is told in their thread
that a person will reply there. In a DM the support team cannot see the thread: they are asked
to contact the user directly, and the user is told so. While the escalation is open the bot
stays quiet in that thread (the message path asks `store.active_escalation`). An escalation
channel the bot is not in (or that is gone) still gets the user a reply ("I couldn't reach the
support team…"), an operator log line, and a problem admins see in the App Home
(`Problems`); the escalation is then closed at once so that the bot does not stay quiet for a
hand-over nobody received.

The Slack side is behind `SupportSlack` (implemented by `bot.slack.support.SupportWriter`,
through the publisher's `SlackCaller`).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bot.errors import SlackDeliveryError, StoreError
from bot.render.escalation import EscalationView, render_escalation, trace_containers
from bot.render.message import SlackMessage
from bot.store.base import AnswerRecord, Escalation, SessionStore, ThreadKey

log = structlog.get_logger(__name__)

# --- which messages ask for a person ----------------------------------------------------------

# The people a user may ask for, as a noun phrase (after "a", "an", "the", "some", "your").
_PERSON = (
    r"(?:(?:real|actual|live|human|support|customer (?:support|service)|service)\s+)?"
    r"(?:person|human(?: being)?|agent|someone|somebody|representative|rep|operator|staff"
    r"|member of (?:staff|the support team|your team)|support team|team member"
    r"|people|humans|employee|engineer)"
)
_DET = r"(?:(?:a|an|the|some|your|one of your)\s+)?"
# The request itself, each alternative meant as the whole message (lead-in and tail aside).
_REQUEST = (
    r"(?:talk|speak|chat|get through|be put through|be connected|connect me|put me through"
    r"|transfer me|hand me over|pass me|get in touch|be in touch)\s+(?:to|with)\s+"
    rf"(?:{_DET}{_PERSON}|(?:the\s+)?support)"
    rf"|(?:get|reach|contact|need|want|request|see|have|(?:get|give|find) me)\s+{_DET}{_PERSON}"
    rf"|(?:help|support) from\s+{_DET}{_PERSON}"
    rf"|{_DET}(?:real|actual|live)\s+(?:person|human|agent|people|humans)"
    r"|(?:an?\s+)?(?:human(?: being)?|person|representative|live agent|agent|operator)"
    r"|escalate(?:\s+(?:this|it|me|my (?:question|issue|case|ticket)|to (?:a )?(?:human|person"
    r"|support|someone)))?"
    r"|(?:contact|call|email|reach)\s+(?:the\s+)?support(?:\s+team)?"
    r"|(?:is|are) there (?:a|any) (?:real\s+)?(?:person|human|humans|people)(?: (?:here|around"
    r"|i can (?:talk|speak) (?:to|with)))?"
)
# A polite or plain lead-in before the request ("hi, can I please…").
_LEAD = (
    r"(?:(?:hi|hey|hello|ok|okay|sorry|so|well|then|just|actually|pls|please|can|could|may|i"
    r"|you|we|me|let|would|like|love|want|wanna|need|to|id|im|rather|prefer|instead|now|help"
    r"|it|is|possible|be|allowed|am|trying|try|there|any|way)\s+)*"
)
# A polite or plain tail ("…please", "…now", "…instead", "…asap thanks").
_TAIL = (
    r"(?:\s+(?:please|pls|plz|now|instead|asap|here|thanks|thank you|thx|right now|about this"
    r"|about it|on this|for this|for help|for me|urgently|again|then|already))*"
)
HUMAN_REQUEST = re.compile(rf"{_LEAD}(?:{_REQUEST}){_TAIL}")
# Punctuation, emoji codes and quotes dropped before matching; apostrophes dropped (i'd → id).
_NOISE = re.compile(r":[a-z0-9_+-]+:|[^\w\s]")


def normalise(text: str) -> str:
    """Lower case, one space between words, no punctuation, emoji codes or apostrophes."""
    text = text.lower().replace("’", "").replace("'", "")
    return " ".join(_NOISE.sub(" ", text).split())


def is_human_request(text: str) -> bool:
    """The whole message asks for a person (the bot's mention already taken out)."""
    words = normalise(text)
    if not words or len(words) > 80:
        return False
    return HUMAN_REQUEST.fullmatch(words) is not None


# --- where a hand-over goes -------------------------------------------------------------------

SETTING = "escalation_channels"  # workspace settings: specialist → channel id


def specialist_channel(settings: Mapping[str, Any] | None, specialist: str | None) -> str | None:
    """The workspace's escalation channel for `specialist` ("billing-agent", or "billing" for
    it), or None when the settings name none."""
    channels = (settings or {}).get(SETTING)
    if not specialist or not isinstance(channels, Mapping):
        return None

    def short(name: str) -> str:
        return name.strip().lower().removesuffix("-agent").removesuffix("_agent")

    for name in (specialist, *(n for n in channels if isinstance(n, str))):
        if name == specialist or short(name) == short(specialist):
            found = channels.get(name)
            if isinstance(found, str) and found.strip():
                return found.strip()
    return None


# --- what admins should know -------------------------------------------------------------------

PROBLEMS_PER_TEAM = 10
PROBLEM_TEAMS = 1000


class Problems:
    """Support problems an admin must fix, per workspace, in memory and bounded: the newest
    `PROBLEMS_PER_TEAM` per workspace, for the `PROBLEM_TEAMS` workspaces noted last. One
    problem per subject (a channel): noting it again replaces it, fixing it clears it."""

    def __init__(self, per_team: int = PROBLEMS_PER_TEAM, teams: int = PROBLEM_TEAMS) -> None:
        self._per_team = per_team
        self._teams = teams
        self._by_team: collections.OrderedDict[str, collections.OrderedDict[str, str]] = (
            collections.OrderedDict()
        )

    def note(self, team_id: str, subject: str, message: str) -> None:
        found = self._by_team.setdefault(team_id, collections.OrderedDict())
        self._by_team.move_to_end(team_id)
        found.pop(subject, None)
        found[subject] = message
        while len(found) > self._per_team:
            found.popitem(last=False)
        while len(self._by_team) > self._teams:
            self._by_team.popitem(last=False)

    def clear(self, team_id: str, subject: str) -> None:
        found = self._by_team.get(team_id)
        if found is not None:
            found.pop(subject, None)

    def of(self, team_id: str) -> list[str]:
        """The workspace's open problems, oldest first (what the App Home shows admins)."""
        return list(self._by_team.get(team_id, {}).values())


# --- the hand-over -----------------------------------------------------------------------------

RESOLVER_UNDELIVERED = "powabot"  # `resolved_by` of a hand-over whose message never arrived

HANDED_OVER = (
    "I've asked the support team to take over: a person will reply in this thread."
    " I'll stay quiet here until they mark it resolved."
)
HANDED_OVER_DM = (
    "I've asked the support team to take over: a person will contact you directly (they can't"
    " see our conversation here). I'll stay quiet in this thread until they mark it resolved."
)
ALREADY_HANDED_OVER = "The support team already has this conversation: a person will reply."
NO_CHANNEL = (
    "I can't hand this over: no support channel is set up for me. Please contact your"
    " support team directly."
)
UNREACHABLE = (
    "I couldn't reach the support team (I'm not in their channel). Please contact them"
    " directly; I've told the admins."
)
FAILED = "I couldn't reach the support team just now. Please try again, or contact them directly."
UNKNOWN_ANSWER = (
    "I can't find that answer any more, so I can't hand it over. Ask for a person in the"
    " conversation's thread, or contact your support team directly."
)


def not_in_channel_problem(channel_id: str, error: str) -> str:
    """What the App Home shows admins when the escalation channel cannot be reached."""
    if error == "not_in_channel":
        return (
            f"I'm not a member of the escalation channel <#{channel_id}>, so hand-overs to a"
            " person fail. Invite me there (`/invite @powabot`) or pick another channel."
        )
    return (
        f"The escalation channel {channel_id} can't be reached ({error}): it may be archived"
        " or deleted. Pick another channel in the settings."
    )


NO_CHANNEL_PROBLEM = (
    "A user asked for a person, but no escalation channel is set up: set one in the settings"
    " below (or POWABOT_ESCALATION_CHANNEL)."
)


class SupportSlack(Protocol):
    """The Slack writes and reads a hand-over needs (`bot.slack.support.SupportWriter`)."""

    async def post(self, team_id: str, channel_id: str, message: SlackMessage) -> str:
        """Post `message`; its ts. Raises SlackDeliveryError when Slack refuses it."""
        ...

    async def say(self, team_id: str, channel_id: str, thread_ts: str, text: str) -> bool:
        """A short message in the user's thread; whether Slack took it (never raises)."""
        ...

    async def tell(
        self, team_id: str, channel_id: str, user_id: str, text: str, thread_ts: str | None
    ) -> bool:
        """A message only `user_id` sees; whether Slack took it (never raises)."""
        ...

    async def permalink(self, team_id: str, channel_id: str, ts: str) -> str | None:
        """A link to the message; None when Slack would not give one."""
        ...

    async def bot_messages(
        self, team_id: str, channel_id: str, thread_ts: str
    ) -> list[dict[str, Any]]:
        """The bot's messages in the thread as Slack shows them (ts, text, blocks), oldest
        first ([] when the thread cannot be read)."""
        ...


@dataclass(frozen=True)
class HandOverRequest:
    """Someone asked for a person in a conversation (`key`, the asker's)."""

    key: ThreadKey
    requested_by: str
    via_button: bool
    in_dm: bool
    record: AnswerRecord | None = None  # the answer handed over, when known
    title: str | None = None  # the conversation's first question, when no answer is known
    run_id: str | None = None
    thread: tuple[dict[str, Any], ...] | None = None  # the bot's messages there, if read


@dataclass
class HandOverResult:
    """What came of a request (for logs and tests)."""

    outcome: str  # posted / already / no_channel / unreachable / failed / unknown_answer
    escalation: Escalation | None = None
    channel_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# How many of the bot's latest messages in a thread are looked up to find its last answer.
LAST_ANSWER_LOOKUPS = 10


class HandOver:
    """Hands conversations to the support team and ends hand-overs (see the module doc)."""

    def __init__(
        self,
        store: SessionStore,
        slack: SupportSlack,
        *,
        default_channel: str | None,
        problems: Problems | None = None,
    ) -> None:
        self.store = store
        self.slack = slack
        self.default_channel = default_channel
        self.problems = problems or Problems()

    async def from_answer(
        self,
        team_id: str,
        channel_id: str,
        reply_ts: str,
        user_id: str,
        *,
        in_dm: bool,
        thread_ts: str | None = None,
    ) -> HandOverResult:
        """ "Talk to a person" on the answer `reply_ts` (the button's value); `thread_ts`: where
        the button was, for the reply when the answer is unknown."""
        try:
            record = await self.store.get_answer(team_id, channel_id, reply_ts)
        except StoreError as exc:
            log.error("escalation_answer_lookup_failed", error=str(exc))
            record = None
        if record is None:
            log.warning("escalation_answer_unknown", channel=channel_id, reply_ts=reply_ts)
            await self.slack.tell(team_id, channel_id, user_id, UNKNOWN_ANSWER, thread_ts)
            return HandOverResult("unknown_answer")
        return await self.hand_over(
            HandOverRequest(record.key, user_id, via_button=True, in_dm=in_dm, record=record)
        )

    async def from_message(self, key: ThreadKey, *, in_dm: bool) -> HandOverResult:
        """A message in the conversation `key` asked for a person: its last answer goes along
        (found among the bot's latest messages in the thread), else what the store knows."""
        record, title, run_id = None, None, None
        posted: list[dict[str, Any]] = []
        try:
            session = await self.store.get_session(key)
            if session is not None:
                title, run_id = session.title, session.last_run_id
                posted = await self.slack.bot_messages(key.team_id, key.channel_id, key.thread_ts)
                record = await self._last_answer(key, run_id, posted)
        except StoreError as exc:
            log.error("escalation_context_unavailable", error=str(exc))
        return await self.hand_over(
            HandOverRequest(
                key,
                key.user_id,
                via_button=False,
                in_dm=in_dm,
                record=record,
                title=title,
                run_id=record.run_id if record else run_id,
                thread=tuple(posted),
            )
        )

    async def _last_answer(
        self, key: ThreadKey, run_id: str | None, posted: list[dict[str, Any]]
    ) -> AnswerRecord | None:
        """The conversation's latest answer record (the one of `run_id` preferred), looked up
        among the bot's latest messages in the thread."""
        first: AnswerRecord | None = None
        newest = [str(m.get("ts") or "") for m in reversed(posted)]  # oldest first from Slack
        for ts in newest[:LAST_ANSWER_LOOKUPS]:
            record = await self.store.get_answer(key.team_id, key.channel_id, ts)
            if record is None or record.key != key:
                continue
            if run_id is None or record.run_id == run_id:
                return record
            first = first or record
        return first

    async def channel_for(self, team_id: str, specialist: str | None) -> str | None:
        """The specialist's escalation channel in this workspace, else the default one."""
        try:
            settings = await self.store.get_workspace_settings(team_id)
        except StoreError as exc:
            log.error("escalation_settings_unavailable", error=str(exc))
            settings = None
        return specialist_channel(settings, specialist) or self.default_channel

    async def hand_over(self, req: HandOverRequest) -> HandOverResult:
        """Post the hand-over in the escalation channel and tell the user in their thread."""
        key = req.key
        structlog.contextvars.bind_contextvars(
            team=key.team_id, channel=key.channel_id, thread_ts=key.thread_ts
        )
        try:
            return await self._hand_over(req)
        finally:
            structlog.contextvars.unbind_contextvars("team", "channel", "thread_ts")

    async def _hand_over(self, req: HandOverRequest) -> HandOverResult:
        key, record = req.key, req.record
        try:
            if await self.store.active_escalation(key) is not None:
                await self._say(key, ALREADY_HANDED_OVER)
                return HandOverResult("already")
        except StoreError as exc:
            log.error("escalation_lookup_failed", error=str(exc))
        specialist = record.specialists[0] if record and record.specialists else None
        channel = await self.channel_for(key.team_id, specialist)
        if channel is None:
            log.warning("escalation_channel_not_configured", specialist=specialist)
            self.problems.note(key.team_id, "escalation-channel", NO_CHANNEL_PROBLEM)
            await self._say(key, NO_CHANNEL)
            return HandOverResult("no_channel")
        self.problems.clear(key.team_id, "escalation-channel")
        wanted = Escalation(
            id=None,
            key=key,
            run_id=req.run_id or (record.run_id if record else None),
            specialist=specialist,
            requested_by=req.requested_by,
            channel_id=channel,
        )
        try:
            escalation = await self.store.open_escalation(wanted)
        except StoreError as exc:
            log.error("escalation_not_stored", error=str(exc))
            await self._say(key, FAILED)
            return HandOverResult("failed", channel_id=channel)
        if escalation.id is None or escalation.message_ts is not None:
            await self._say(key, ALREADY_HANDED_OVER)  # another click won the race
            return HandOverResult("already", escalation, channel)
        link = None
        if not req.in_dm:
            link = await self.slack.permalink(key.team_id, key.channel_id, key.thread_ts)
        trace: tuple[dict[str, Any], ...] = ()
        if record is not None:
            thread = req.thread
            if thread is None:
                thread = tuple(
                    await self.slack.bot_messages(key.team_id, key.channel_id, key.thread_ts)
                )
            trace = trace_containers(thread, record.reply_ts)
        view = EscalationView(
            escalation_id=escalation.id,
            requested_by=req.requested_by,
            asker=key.user_id,
            channel_id=key.channel_id,
            thread_ts=key.thread_ts,
            in_dm=req.in_dm,
            via_button=req.via_button,
            question=record.question if record else (req.title or ""),
            answer=record.answer if record else "",
            sources=record.sources if record else (),
            specialists=record.specialists if record else (),
            run_id=escalation.run_id,
            tokens=record.tokens if record else None,
            link=link,
            trace=trace,
        )
        try:
            ts = await self.slack.post(key.team_id, channel, render_escalation(view))
        except SlackDeliveryError as exc:
            return await self._undelivered(req, escalation, channel, exc)
        self.problems.clear(key.team_id, f"channel:{channel}")
        try:
            await self.store.set_escalation_message(escalation.id, ts)
        except StoreError as exc:  # the button carries the id: resolving still works
            log.error("escalation_message_not_stored", error=str(exc))
        log.info(
            "escalation_posted",
            escalation_id=escalation.id,
            escalation_channel=channel,
            specialist=specialist,
            run_id=escalation.run_id,
            via="button" if req.via_button else "message",
        )
        await self._say(key, HANDED_OVER_DM if req.in_dm else HANDED_OVER)
        return HandOverResult("posted", escalation, channel, {"ts": ts, "link": link})

    async def _undelivered(
        self,
        req: HandOverRequest,
        escalation: Escalation,
        channel: str,
        exc: SlackDeliveryError,
    ) -> HandOverResult:
        """The hand-over could not be posted: the user is told, the escalation closed (the bot
        must not stay quiet for nobody), and a gone channel becomes an admin problem."""
        key = req.key
        if escalation.id is not None:
            try:
                await self.store.resolve_escalation(escalation.id, resolved_by=RESOLVER_UNDELIVERED)
            except StoreError as store_exc:
                log.error("escalation_not_closed", error=str(store_exc))
        if exc.channel_gone:
            log.error(
                "escalation_channel_unreachable",
                escalation_channel=channel,
                slack_error=exc.error,
                reason="invite the bot to the escalation channel or pick another one",
            )
            self.problems.note(
                key.team_id, f"channel:{channel}", not_in_channel_problem(channel, exc.error)
            )
            await self._say(key, UNREACHABLE)
            return HandOverResult("unreachable", escalation, channel)
        log.error("escalation_post_failed", escalation_channel=channel, slack_error=exc.error)
        await self._say(key, FAILED)
        return HandOverResult("failed", escalation, channel)

    async def _say(self, key: ThreadKey, text: str) -> None:
        """Tell the asker in their thread (a visible message: others there see it too)."""
        if not await self.slack.say(key.team_id, key.channel_id, key.thread_ts, text):
            await self.slack.tell(key.team_id, key.channel_id, key.user_id, text, key.thread_ts)
