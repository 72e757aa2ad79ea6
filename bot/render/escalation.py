"""The message a hand-over posts in the escalation channel, and its "resolved" edit (pure).

Shape (`render_escalation`)::

    SlackMessage(
        text="<@U1> asked for a person: What's the refund window…",   # notification / fallback
        blocks=[
            section: ":raising_hand: <@U1> asked for a person (after rating an answer down)…",
            section: "*Question*" + the question, quoted,
            section: "*Answer given*" + the answer (shortened), quoted,
            context: "*Sources:* Refunds FAQ (Billing KB) · …",            # when there were any
            context: ":link: <permalink|Open the conversation>" (or where it was, in words),
            container: the collapsed delegation trace, copied from the user's thread,  # if any
            actions: [button "Mark resolved" (action `powabot_resolve`, value = escalation id)],
        ],
    )

`render_resolved` turns the posted message (its blocks as Slack sent them back in the click)
into the resolved version: the button is gone, a line says who resolved it.

Question, answer, sources and trace are user or model text: escaped (no `<!channel>`, no
`<@…>` of theirs); the only mentions are ours (the asker, the resolver).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.render.labels import shorten
from bot.render.links import is_linkable
from bot.render.message import SlackMessage
from bot.render.mrkdwn import to_mrkdwn
from bot.render.safety import escape, escape_url
from bot.render.trace import TITLE as TRACE_TITLE

RESOLVE_ACTION = "powabot_resolve"
ACTIONS_BLOCK = "powabot_escalation_actions"
RESOLVED_BLOCK = "powabot_escalation_resolved"
QUESTION_CHARS = 1500
ANSWER_CHARS = 1800  # of the answer's Markdown, before mrkdwn conversion (a section holds 3,000)
TEXT_CHARS = 150  # of the question in the notification text
SOURCES_CHARS = 2900
MAX_BLOCKS = 50  # Slack's per-message limit
SECTION_LIMIT = 3000

# "Title (KB) <https://…>": how an `AnswerRecord` keeps a source it showed.
_SOURCE_LINE = re.compile(r"^(?P<label>.*?)\s*<(?P<url>[^<>\s]+)>\s*$")


@dataclass(frozen=True)
class EscalationView:
    """Everything the escalation message shows (read from the store and Slack beforehand)."""

    escalation_id: int
    requested_by: str  # Slack user who asked for a person
    asker: str  # the user whose conversation it is (usually the same)
    channel_id: str  # where the conversation is
    thread_ts: str
    in_dm: bool  # the conversation is in the bot's DM: the support team cannot see it
    via_button: bool  # "Talk to a person" after a rating, else a message in the thread
    question: str = ""
    answer: str = ""
    sources: tuple[str, ...] = ()
    specialists: tuple[str, ...] = ()
    run_id: str | None = None
    tokens: int | None = None
    link: str | None = None  # chat.getPermalink of the user's thread
    # The answer's collapsed trace as the user's thread shows it (`container` blocks copied
    # from the trace message the bot posted under the answer; see `trace_containers`).
    trace: tuple[dict[str, Any], ...] = ()


def render_escalation(view: EscalationView) -> SlackMessage:
    """The escalation channel's message for one hand-over, with its "Mark resolved" button."""
    blocks: list[dict[str, Any]] = [_section(_headline(view))]
    if view.question.strip():
        question = escape(shorten(view.question, QUESTION_CHARS))
        blocks.append(_section(f"*Question*\n{_quote(question)}"))
    if view.answer.strip():
        answer = to_mrkdwn(_cut_markdown(view.answer, ANSWER_CHARS))
        blocks.append(_section(_fit(f"*Answer given*\n{_quote(answer)}")))
    if sources := sources_line(view.sources):
        blocks.append(_context(sources))
    blocks.append(_context(_where(view)))
    blocks.extend(trace_blocks(view, room=MAX_BLOCKS - len(blocks) - 1))
    blocks.append(
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK,
            "elements": [
                {
                    "type": "button",
                    "action_id": RESOLVE_ACTION,
                    "text": {"type": "plain_text", "text": "Mark resolved"},
                    "style": "primary",
                    "value": str(view.escalation_id),
                }
            ],
        }
    )
    text = f"<@{view.requested_by}> asked for a person"
    if view.question.strip():
        text += f": {escape(shorten(view.question, TEXT_CHARS))}"
    return SlackMessage(text, blocks=blocks)


def render_resolved(
    text: str, blocks: Sequence[Mapping[str, Any]] | None, resolved_by: str
) -> SlackMessage:
    """The escalation message once resolved: as posted, without its button, plus who resolved
    it. `blocks` are the message's blocks as a click reports them (None: not reported)."""
    line = f":white_check_mark: Resolved by <@{resolved_by}>"
    kept = [
        dict(b)
        for b in blocks or []
        if b.get("block_id") not in (ACTIONS_BLOCK, RESOLVED_BLOCK) and not _has_resolve(b)
    ]
    if not kept:
        kept = [_section("An escalation to the support team")]
    kept.append(
        {
            "type": "context",
            "block_id": RESOLVED_BLOCK,
            "elements": [{"type": "mrkdwn", "text": line}],
        }
    )
    return SlackMessage(f"{text} ({line[len(':white_check_mark: ') :]})", blocks=kept)


def sources_line(sources: Sequence[str]) -> str:
    """``*Sources:* <url|Title (KB)> · Title (KB)`` from an answer record's source lines."""
    items: list[str] = []
    for raw in sources:
        m = _SOURCE_LINE.match(raw)
        if m and is_linkable(m.group("url")):
            label = escape(m.group("label").strip() or m.group("url"))
            items.append(f"<{escape_url(m.group('url'))}|{label}>")
        elif raw.strip():
            items.append(escape(raw.strip()))
    if not items:
        return ""
    line = "*Sources:* " + " · ".join(items)
    return line if len(line) <= SOURCES_CHARS else line[: SOURCES_CHARS - 1] + "…"


def trace_blocks(view: EscalationView, *, room: int) -> list[dict[str, Any]]:
    """The answer's collapsed trace containers, as many as fit in `room` blocks (children
    counted)."""
    out: list[dict[str, Any]] = []
    for container in view.trace:
        size = 1 + len(container.get("child_blocks") or [])
        if size > room:
            break
        out.append(dict(container))
        room -= size
    return out


def is_trace(message: Mapping[str, Any]) -> bool:
    """A message holding a delegation trace (`bot.render.trace`, container style)."""
    return bool(_trace_containers(message))


def trace_containers(
    messages: Sequence[Mapping[str, Any]], reply_ts: str
) -> tuple[dict[str, Any], ...]:
    """The trace of the answer whose first message is `reply_ts`, from the bot's messages in
    its thread (oldest first, as conversations.replies gives them): the trace message(s)
    after the answer, before the next answer ends (the message holding an answer's feedback
    buttons ends it). () when that answer has no trace there."""
    found: list[dict[str, Any]] = []
    answer_ended = False
    for message in messages:
        if _ts(message.get("ts")) < _ts(reply_ts):
            continue
        containers = _trace_containers(message)
        if containers:
            found += containers
            continue
        if found:
            break
        if _ends_an_answer(message):
            if answer_ended:
                break  # the next answer ended: this one had no trace
            answer_ended = True
    return tuple(found)


def _ts(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = message.get("blocks")
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _trace_containers(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        dict(b)
        for b in _blocks(message)
        if b.get("type") == "container"
        and isinstance(b.get("title"), dict)
        and str(b["title"].get("text") or "").startswith(TRACE_TITLE)
    ]


def _ends_an_answer(message: Mapping[str, Any]) -> bool:
    return any(b.get("type") == "context_actions" for b in _blocks(message))


def _headline(view: EscalationView) -> str:
    who = f"<@{view.requested_by}>"
    why = "after rating an answer down" if view.via_button else "in their conversation with me"
    head = f":raising_hand: {who} asked for a person ({why})"
    if view.asker != view.requested_by:
        head += f" about <@{view.asker}>'s question"
    if view.specialists:
        head += ". Answered by " + ", ".join(escape(s) for s in view.specialists)
    if view.run_id:
        head += f" · run `{escape(view.run_id)}`"
    return head


def _where(view: EscalationView) -> str:
    if view.in_dm:
        return (
            f":envelope: Asked in a direct message with me, which only <@{view.asker}> can"
            " see: please reply to them directly."
        )
    if view.link:
        return f":link: <{escape_url(view.link)}|Open the conversation> and reply in its thread."
    return f":link: In <#{view.channel_id}>, the thread of message {escape(view.thread_ts)}."


def _cut_markdown(text: str, limit: int) -> str:
    """The first `limit` characters of the answer's Markdown, lines kept, ending in "…"."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if "\n" in head[limit // 2 :]:
        head = head.rsplit("\n", 1)[0]
    return head.rstrip() + "…"


def _quote(mrkdwn: str) -> str:
    return "\n".join(f">{line}" for line in mrkdwn.splitlines() or [""])


def _fit(text: str) -> str:
    return text if len(text) <= SECTION_LIMIT else text[: SECTION_LIMIT - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _fit(text)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _fit(text)}]}


def _has_resolve(block: Mapping[str, Any]) -> bool:
    elements = block.get("elements")
    return isinstance(elements, list) and any(
        isinstance(e, dict) and e.get("action_id") == RESOLVE_ACTION for e in elements
    )
