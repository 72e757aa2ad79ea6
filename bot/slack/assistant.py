"""The bot's DM as an assistant surface: a greeting, suggested prompts, thread titles, and the
channel a user is looking at.

Two experiences, both handled (`register`):

* **Agent view** (`features.agent_view`, Slack's default since mid-2026): Slack sends
  `app_home_opened` with `tab == "messages"` when a user opens the bot's DM. The greeting goes
  out as the title of the suggested prompts (`assistant.threads.setSuggestedPrompts` without
  `thread_ts`: with one, an agent app's call silently does nothing), at most once per user per
  `GREET_EVERY` seconds so that opening the DM again and again does not repeat it.
* **Legacy assistant view** (`features.assistant_view`): `assistant_thread_started` gets the
  greeting posted in the new thread and the prompts set on it; the channel the user was viewing
  (`assistant_thread.context.channel_id`, updated by `assistant_thread_context_changed`) is
  remembered for that thread (`AssistantContexts.viewing`).

The prompts are `POWABOT_SUGGESTED_PROMPTS` when set, else one per specialist: the first
question each specialist is expected to answer in `seed-content/eval.yaml` (read once, at
start-up). Every Slack call here is best effort (a refused prompt or title never costs an
answer) and goes through the publisher's `SlackCaller` and budgets (`AssistantWriter`).
Bolt's own `Assistant` middleware is not used: plain event listeners leave the `message`
listener the only one that sees DM messages, in threads or not.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog
import yaml
from slack_bolt.async_app import AsyncApp

from bot.render.message import SlackMessage
from bot.settings import Settings, SuggestedPrompt
from bot.slack.budget import BudgetBook
from bot.slack.calls import Clock, SlackCaller
from bot.slack.writers import SlackWriter, ephemeral_args, reply_args

log = structlog.get_logger(__name__)

MAX_PROMPTS = 4  # Slack shows at most four suggested prompts
PROMPT_TITLE_MAX = 30  # characters of a default prompt's title (its question, cut)
THREAD_TITLE_MAX = 60  # characters of a thread title (the first question, cut)
GREET_EVERY = 15 * 60.0  # seconds: agent view greets one user at most this often
GREETED_KEPT = 10_000  # users remembered for that (the oldest forgotten first)
CONTEXTS_KEPT = 10_000  # assistant threads whose viewed channel is remembered

GENERIC_GREETING = "Hi, I'm powabot: ask me a support question and I'll find the answer for you."
NOTHING_TO_STOP = "There's nothing running to stop."

_LINK = re.compile(r"<([^>|]+)\|([^>]+)>")  # <https://…|label>, <#C1|general>
_ANGLE = re.compile(r"<[^>]*>")  # <@U1>, <!here>, bare <https://…>
_QUOTE = re.compile(r"(?m)^>\s?")
_MARKUP = re.compile(r"`+|(?<!\w)[*_~]+|[*_~]+(?!\w)")  # not the _ of insufficient_scope
# "What's the refund window…?" → "Refund window…": a prompt's title names the topic.
_LEAD_IN = re.compile(
    r"^(?:what(?:'s| is| are)|how (?:do|does|can) (?:i|we|you)|where (?:do|can) (?:i|we)"
    r"|(?:can|could|do|does|is|are) (?:i|we|you|there))\s+(?:the |a |an )?",
    re.IGNORECASE,
)


def eval_file() -> Any:
    """`seed-content/eval.yaml` as packaged with provisioning (a checkout links it there)."""
    return resources.files("provisioning").joinpath("seed-content", "eval.yaml")


def cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: cut at a word boundary, ending in "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:-") + "…"


def plain(text: str) -> str:
    """Slack mrkdwn as plain words: links by their label, mentions and markup dropped."""
    text = _LINK.sub(lambda m: m.group(2), text)
    text = _ANGLE.sub(" ", _QUOTE.sub("", text))
    return " ".join(_MARKUP.sub("", text).split())


def prompt_title(question: str) -> str:
    """A suggested prompt's title from its question: the topic, at most `PROMPT_TITLE_MAX`."""
    topic = _LEAD_IN.sub("", plain(question)).rstrip("?!. ") or question
    return cut(topic[:1].upper() + topic[1:], PROMPT_TITLE_MAX)


def thread_title(question: str) -> str:
    """A thread's title from its first question: plain text, at most `THREAD_TITLE_MAX`."""
    return cut(plain(question), THREAD_TITLE_MAX) or "Question"


def specialist_name(agent: str) -> str:
    """ "billing-agent" → "billing"."""
    name = agent.strip().removesuffix("-agent").removesuffix("_agent")
    return name.replace("-", " ").replace("_", " ").strip()


def first_questions(eval_data: object) -> dict[str, str]:
    """Specialist → its first question in an eval set (`{"questions": [{question, expected}]}`),
    in the order the specialists first appear; entries of another shape are skipped."""
    found: dict[str, str] = {}
    items = eval_data.get("questions") if isinstance(eval_data, dict) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        question, agent = item.get("question"), item.get("expected")
        if isinstance(question, str) and question.strip() and isinstance(agent, str):
            found.setdefault(agent, question.strip())
    return found


def default_prompts(questions: dict[str, str]) -> list[SuggestedPrompt]:
    """One prompt per specialist (at most four): its question, titled by its topic."""
    return [
        SuggestedPrompt(title=prompt_title(question), message=question)
        for question in list(questions.values())[:MAX_PROMPTS]
    ]


def greeting(specialists: Iterable[str]) -> str:
    """One sentence saying what powabot helps with, naming the specialists' fields."""
    names = [specialist_name(s) for s in specialists if specialist_name(s)]
    if not names:
        return GENERIC_GREETING
    fields = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"Hi, I'm powabot: ask me your {fields} questions and I'll find the answer for you."


def load_eval(source: Any = None) -> dict[str, str]:
    """The first question per specialist from the eval set; empty (logged) when unreadable."""
    try:
        text = (source if source is not None else eval_file()).read_text(encoding="utf-8")
        return first_questions(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        log.warning("suggested_prompts_eval_unreadable", error_type=type(exc).__name__)
        return {}


class AssistantContexts:
    """The channel a user was viewing when they opened an assistant thread, by
    (DM channel, thread_ts); the `CONTEXTS_KEPT` most recent threads are kept."""

    def __init__(self, kept: int = CONTEXTS_KEPT) -> None:
        self._kept = kept
        self._viewing: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def remember(self, channel_id: str, thread_ts: str, viewing: str | None) -> None:
        key = (channel_id, thread_ts)
        if not viewing:
            self._viewing.pop(key, None)
            return
        self._viewing[key] = viewing
        self._viewing.move_to_end(key)
        while len(self._viewing) > self._kept:
            self._viewing.popitem(last=False)

    def viewing(self, channel_id: str, thread_ts: str) -> str | None:
        """The channel id the user was viewing in that thread's context, if Slack said."""
        return self._viewing.get((channel_id, thread_ts))

    def __len__(self) -> int:
        return len(self._viewing)


class GreetingMemo:
    """Who was greeted lately: `due` is True at most once per key per `every` seconds; the
    `kept` most recent keys are remembered (a forgotten one may be greeted early, no harm)."""

    def __init__(
        self, every: float = GREET_EVERY, kept: int = GREETED_KEPT, clock: Clock = time.monotonic
    ) -> None:
        self.every = every
        self._kept = kept
        self._clock = clock
        self._at: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    def due(self, team_id: str, user_id: str) -> bool:
        """True (and noted) when `user_id` was not greeted within `every` seconds."""
        key, now = (team_id, user_id), self._clock()
        last = self._at.get(key)
        if last is not None and now - last < self.every:
            return False
        self._at[key] = now
        self._at.move_to_end(key)
        while len(self._at) > self._kept:
            self._at.popitem(last=False)
        return True

    def forget(self, team_id: str, user_id: str) -> None:
        """The greeting did not reach Slack: the next open may try again."""
        self._at.pop((team_id, user_id), None)


@dataclass(frozen=True)
class ThreadOpened:
    """`assistant_thread_started` / `assistant_thread_context_changed`, read at the edge."""

    team_id: str
    user_id: str
    channel_id: str
    thread_ts: str
    viewing: str | None

    @classmethod
    def read(cls, body: dict[str, Any], event: dict[str, Any]) -> ThreadOpened | None:
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict):
            return None
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not (isinstance(channel, str) and channel and isinstance(thread_ts, str) and thread_ts):
            return None
        context = thread.get("context")
        viewing = context.get("channel_id") if isinstance(context, dict) else None
        return cls(
            team_id=str(body.get("team_id") or ""),
            user_id=str(thread.get("user_id") or ""),
            channel_id=channel,
            thread_ts=thread_ts,
            viewing=viewing if isinstance(viewing, str) and viewing else None,
        )


class AssistantWriter(SlackWriter):
    """The assistant surface's Slack writes, through the publisher's caller and budgets.

    Best effort: each waits at most `CALL_WAIT` for its budget, is tried once, and answers
    whether Slack took it; failures are logged, never raised.
    """

    async def suggest(
        self,
        team_id: str,
        channel_id: str,
        prompts: list[SuggestedPrompt],
        *,
        title: str,
        thread_ts: str | None = None,
    ) -> bool:
        """Set the suggested prompts of the DM (agent view: no `thread_ts`) or of a thread."""
        args: dict[str, Any] = {
            "channel_id": channel_id,
            "prompts": [p.model_dump() for p in prompts[:MAX_PROMPTS]],
            "title": title,
        }
        if thread_ts is not None:
            args["thread_ts"] = thread_ts
        bucket = self._tier4("assistant", team_id)
        return await self._try(
            "assistant.threads.setSuggestedPrompts", bucket, event="assistant_call", **args
        )

    async def set_title(self, team_id: str, channel_id: str, thread_ts: str, title: str) -> bool:
        """Name an assistant thread (a DM thread) in the user's thread history."""
        bucket = self._tier4("assistant", team_id)
        return await self._try(
            "assistant.threads.setTitle",
            bucket,
            event="assistant_call",
            channel_id=channel_id,
            thread_ts=thread_ts,
            title=title,
        )

    async def say(self, channel_id: str, thread_ts: str, text: str) -> bool:
        """Post a short message in a thread (the greeting), plain text only."""
        return await self._try(
            "chat.postMessage",
            self.budgets.posts(channel_id),
            event="assistant_call",
            **reply_args(channel_id, thread_ts, text),
        )

    async def tell(
        self, team_id: str, channel_id: str, user_id: str, text: str, thread_ts: str | None
    ) -> bool:
        """A message only `user_id` sees (in the thread, when given)."""
        return await self._try(
            "chat.postEphemeral",
            self._tier4("ephemeral", team_id),
            event="assistant_call",
            **ephemeral_args(channel_id, user_id, SlackMessage(text), thread_ts),
        )


class Assistant:
    """The assistant surface's behaviour: greeting, prompts, titles, viewed channels."""

    def __init__(
        self,
        writer: AssistantWriter,
        prompts: list[SuggestedPrompt],
        greeting_text: str,
        *,
        memo: GreetingMemo | None = None,
        contexts: AssistantContexts | None = None,
    ) -> None:
        self.writer = writer
        self.prompts = prompts[:MAX_PROMPTS]
        self.greeting = greeting_text
        self.memo = memo or GreetingMemo()
        self.contexts = contexts or AssistantContexts()
        self.handled = 0  # assistant-surface events handled to the end (tests wait on it)
        # A workspace's own prompts (its admins' App Home settings); empty: `prompts`.
        self.workspace_prompts: Callable[[str], Awaitable[list[SuggestedPrompt]]] | None = None

    async def prompts_for(self, team_id: str) -> list[SuggestedPrompt]:
        """The prompts to suggest in `team_id`: its admins' when they set some, else ours."""
        if self.workspace_prompts is not None:
            own = await self.workspace_prompts(team_id)
            if own:
                return own[:MAX_PROMPTS]
        return self.prompts

    @classmethod
    def build(
        cls, settings: Settings, caller: SlackCaller, budgets: BudgetBook, eval_source: Any = None
    ) -> Assistant:
        """The configured prompts (or one per specialist from the eval set) and greeting."""
        questions = load_eval(eval_source)
        prompts = list(settings.POWABOT_SUGGESTED_PROMPTS) or default_prompts(questions)
        return cls(AssistantWriter(caller, budgets), prompts, greeting(questions))

    async def messages_tab_opened(self, team_id: str, user_id: str, channel_id: str) -> None:
        """Agent view: greet with the prompts in the DM, unless this user was greeted lately."""
        prompts = await self.prompts_for(team_id)
        if not prompts or not self.memo.due(team_id, user_id):
            return
        if not await self.writer.suggest(team_id, channel_id, prompts, title=self.greeting):
            self.memo.forget(team_id, user_id)

    async def thread_started(self, opened: ThreadOpened) -> None:
        """Legacy assistant view: remember the viewed channel, greet, set the prompts."""
        self.contexts.remember(opened.channel_id, opened.thread_ts, opened.viewing)
        await self.writer.say(opened.channel_id, opened.thread_ts, self.greeting)
        prompts = await self.prompts_for(opened.team_id)
        if prompts:
            await self.writer.suggest(
                opened.team_id,
                opened.channel_id,
                prompts,
                title="Try asking",
                thread_ts=opened.thread_ts,
            )

    async def set_title(self, team_id: str, channel_id: str, thread_ts: str, question: str) -> None:
        """Title a DM thread from its first question. Best effort: never raises."""
        await self.writer.set_title(team_id, channel_id, thread_ts, thread_title(question))

    async def nothing_to_stop(
        self, team_id: str, channel_id: str, user_id: str, thread_ts: str | None
    ) -> None:
        """Tell (only) the user who asked to stop that no answer of theirs is running."""
        await self.writer.tell(team_id, channel_id, user_id, NOTHING_TO_STOP, thread_ts)


def register(app: AsyncApp, assistant: Assistant) -> None:
    """Wire the DM-opened and assistant-thread listeners into `app`."""

    @app.event("app_home_opened")
    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        user, channel = event.get("user"), event.get("channel")
        try:
            if event.get("tab") != "messages":
                return  # the Home tab (disabled in the manifests) or the About tab
            if not (isinstance(user, str) and user and isinstance(channel, str) and channel):
                return
            await assistant.messages_tab_opened(str(body.get("team_id") or ""), user, channel)
        finally:
            assistant.handled += 1

    @app.event("assistant_thread_started")
    async def on_thread_started(body: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            opened = ThreadOpened.read(body, event)
            if opened is not None:
                await assistant.thread_started(opened)
        finally:
            assistant.handled += 1

    @app.event("assistant_thread_context_changed")
    async def on_context_changed(body: dict[str, Any], event: dict[str, Any]) -> None:
        opened = ThreadOpened.read(body, event)
        if opened is not None:
            assistant.contexts.remember(opened.channel_id, opened.thread_ts, opened.viewing)
        assistant.handled += 1
