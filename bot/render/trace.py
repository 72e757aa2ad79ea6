"""The delegation trace posted under a finished answer, collapsed by default.

Shape (``style="container"``, the default), one or more messages, each::

    SlackMessage(
        text="Delegation trace: billing-agent (1 search, 2.1 s)",   # notification / fallback
        blocks=[{"type": "container", "title": {...}, "subtitle": {...},
                 "is_collapsible": True, "default_collapsed": True,
                 "child_blocks": [context: coordinator, section per delegation, ...,
                                  context: synthesis]}],
    )

Limits kept: ≤ 10 child blocks and ≤ ``CHARS_PER_MESSAGE`` characters per container, ≤ 50 blocks
(containers + children) and ≤ ``CHARS_PER_MESSAGE`` characters per message, section text ≤ 3,000,
title and subtitle ≤ 150. A long trace becomes more containers and more messages, but never more
than ``MAX_TRACE_MESSAGES`` (per style): past that, or past ``MAX_DELEGATIONS_SHOWN`` specialist
runs, the last runs are left out and a line says how many.

``style="attachment"`` is the fallback for a Slack that answers ``invalid_blocks``: the same
lines in one legacy attachment per message (``color``, ``title``, ``text``, ``footer``), which
Slack folds behind "Show more" past about 700 characters or 5 lines.

Everything the model wrote (tasks, queries, result previews) is escaped and mention-safe.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from bot.render.labels import count, millis, seconds, shorten, tokens
from bot.render.message import SlackMessage
from bot.render.safety import defuse, escape, plain
from bot.state import AnswerState, Delegation, ToolStep

TraceStyle = Literal["container", "attachment"]

TITLE = "Delegation trace"
MAX_CHILDREN = 10
MAX_BLOCKS = 50
SECTION_LIMIT = 3000
TITLE_LIMIT = 150
CHARS_PER_MESSAGE = 11000
ATTACHMENT_CHARS = 3000
TASK_LIMIT = 300
QUERY_LIMIT = 120
PREVIEW_LIMIT = 200
AGENTS_IN_SUMMARY = 3
# At most this many trace messages per answer, by style (an attachment holds far less).
MAX_TRACE_MESSAGES: dict[TraceStyle, int] = {"container": 3, "attachment": 6}
MAX_DELEGATIONS_SHOWN = 30

COLORS = {"ok": "#2EB67D", "warn": "#ECB22E", "bad": "#E01E5A"}
_STATUS_ICONS = {
    "completed": ":white_check_mark:",
    "failed": ":x:",
    "error": ":x:",
    "interrupted": ":warning:",
}


def render_trace(state: AnswerState, style: TraceStyle = "container") -> list[SlackMessage]:
    """The delegation trace as one or more thread messages ([] when nothing was delegated)."""
    if style not in ("container", "attachment"):
        raise ValueError(f"render_trace: style must be 'container' or 'attachment', got {style!r}")
    if not state.delegations and not state.coordinator_tools:
        return []
    summary = summary_text(state)
    carry = _as_attachments if style == "attachment" else _as_containers
    shown = min(len(state.delegations), MAX_DELEGATIONS_SHOWN)
    while True:
        messages = carry(state, _parts(state, shown), summary)
        if len(messages) <= MAX_TRACE_MESSAGES[style] or shown == 0:
            return _with_sources(state, messages)
        shown -= 1


def _with_sources(state: AnswerState, messages: list[SlackMessage]) -> list[SlackMessage]:
    """The answer's sources, shown (not collapsed) at the top of the trace's first message,
    right under the answer; unless the answer's own message shows them already."""
    if not state.sources or state.sources_shown or not messages:
        return messages
    # Here, not at the top: bot.powabase.sources (which render.sources reads) imports
    # bot.render.labels, and importing it first would loop back through this package.
    from bot.render.sources import sources_block, sources_mrkdwn

    line, block = sources_mrkdwn(state.sources), sources_block(state.sources)
    first = messages[0]
    blocks = [block, *first.blocks] if first.blocks and block else first.blocks
    text = f"{line}\n{first.text}" if line else first.text
    return [dataclasses.replace(first, text=text, blocks=blocks), *messages[1:]]


def summary_text(state: AnswerState) -> str:
    """``Delegation trace: billing-agent (1 search, 2.1 s)`` (mrkdwn, escaped)."""
    agents = list(dict.fromkeys(d.agent for d in state.delegations))
    named = ", ".join(agents[:AGENTS_IN_SUMMARY])
    if len(agents) > AGENTS_IN_SUMMARY:
        named += f" +{len(agents) - AGENTS_IN_SUMMARY} more"
    stats = ", ".join(_stats(state, with_tokens=False))
    head = f"{TITLE}: {named}" if named else TITLE
    return defuse(escape(f"{head} ({stats})" if stats else head))


# --- the trace's parts, each one child block / one paragraph -------------------------------------


def _parts(state: AnswerState, shown: int) -> list[tuple[str, str]]:
    """(kind, mrkdwn) pairs in reading order; kind is "context" or "section". Only the first
    ``shown`` delegations get a section; a context line counts the rest."""
    parts: list[tuple[str, str]] = []
    agents = list(dict.fromkeys(d.agent for d in state.delegations))
    routed = (
        f"routed the question to {shorten(', '.join(agents), 400)}"
        if agents
        else "answered without a specialist"
    )
    parts.append(("context", f":compass: *Coordinator* {escape(routed)}"))
    if state.coordinator_tools:
        parts.append(("section", _steps_section("*Coordinator tools*", state.coordinator_tools)))
    for number, delegation in enumerate(state.delegations[:shown], start=1):
        parts.append(("section", _delegation_section(number, delegation)))
    if hidden := len(state.delegations) - shown:
        parts.append(("context", f"_…and {count(hidden, 'more specialist run')} not shown_"))
    synthesis = ["*Synthesis*", *(escape(s) for s in _stats(state, with_tokens=True, total=True))]
    parts.append(("context", ":memo: " + " · ".join(synthesis)))
    return [(kind, defuse(text)) for kind, text in parts]


def _delegation_section(number: int, d: Delegation) -> str:
    status = d.status or ("running" if d.completed_at is None else "done")
    icon = _STATUS_ICONS.get(status, ":hourglass_flowing_sand:")
    facts = [escape(status)]
    if (duration := seconds(d.duration_s)) is not None:
        facts.append(duration)
    if d.steps is not None:
        facts.append(count(d.steps, "step"))
    if (used := tokens(d.usage)) is not None:
        facts.append(count(used, "token"))
    head = f"{icon} *{number}. {escape(d.agent)}* · " + " · ".join(facts)
    if d.task:
        head += f"\n_Task:_ {escape(shorten(d.task, TASK_LIMIT))}"
    return _steps_section(head, d.tool_calls)


def _steps_section(head: str, steps: list[ToolStep]) -> str:
    lines = [head]
    budget = SECTION_LIMIT - 60  # room for the "…and N more" line
    used = len(head)
    for shown, step in enumerate(steps):
        line = _step_line(step)
        if used + 1 + len(line) > budget:
            lines.append(f"_…and {count(len(steps) - shown, 'more step')}_")
            break
        lines.append(line)
        used += 1 + len(line)
    return "\n".join(lines)


def _step_line(step: ToolStep) -> str:
    line = f"• `{escape(shorten(step.tool_name, 60))}`"
    if step.query:
        line += f" “{escape(shorten(step.query, QUERY_LIMIT))}”"
    if (took := millis(step.duration_ms)) is not None:
        line += f" · {took}"
    if step.result_preview:
        line += f"\n      ↳ {escape(shorten(step.result_preview, PREVIEW_LIMIT))}"
    return line


def _stats(state: AnswerState, *, with_tokens: bool, total: bool = False) -> list[str]:
    steps = [s for d in state.delegations for s in d.tool_calls] + state.coordinator_tools
    searches = sum(1 for s in steps if _is_search(s.tool_name))
    out = [count(searches, "search", "searches")]
    if others := len(steps) - searches:
        out.append(count(others, "tool call"))
    if (duration := seconds(state.duration_s)) is not None:
        out.append(f"total {duration}" if total else duration)
    if total and state.steps is not None:
        out.append(count(state.steps, "step"))
    if with_tokens:
        used = tokens(state.usage)
        if used is None:
            known = [t for d in state.delegations if (t := tokens(d.usage)) is not None]
            used = sum(known) if known else None
        if used is not None:
            out.append(count(used, "token"))
    return out


def _is_search(tool_name: str) -> bool:
    return "search" in tool_name or "knowledge" in tool_name


# --- carriers -----------------------------------------------------------------------------------


def _as_containers(
    state: AnswerState, parts: list[tuple[str, str]], summary: str
) -> list[SlackMessage]:
    groups: list[list[tuple[str, str]]] = [[]]
    for part in parts:
        group = groups[-1]
        size = sum(len(text) for _, text in group)
        if group and (len(group) >= MAX_CHILDREN or size + len(part[1]) > CHARS_PER_MESSAGE):
            groups.append([])
        groups[-1].append(part)

    subtitle = plain(shorten(" · ".join(_stats(state, with_tokens=True)), TITLE_LIMIT))
    containers: list[dict[str, Any]] = []
    for index, group in enumerate(groups, start=1):
        title = TITLE if len(groups) == 1 else f"{TITLE} ({index}/{len(groups)})"
        containers.append(
            {
                "type": "container",
                "title": {"type": "plain_text", "text": title[:TITLE_LIMIT]},
                "subtitle": {"type": "plain_text", "text": subtitle},
                "is_collapsible": True,
                "default_collapsed": True,
                "child_blocks": [_child(kind, text) for kind, text in group],
            }
        )

    messages: list[list[dict[str, Any]]] = [[]]
    for container in containers:
        batch = messages[-1]
        blocks = sum(1 + len(c["child_blocks"]) for c in batch)
        chars = sum(_container_chars(c) for c in batch)
        if batch and (
            blocks + 1 + len(container["child_blocks"]) > MAX_BLOCKS
            or chars + _container_chars(container) > CHARS_PER_MESSAGE
        ):
            messages.append([])
        messages[-1].append(container)
    return [
        SlackMessage(_part_text(summary, i, len(messages)), blocks=batch)
        for i, batch in enumerate(messages, start=1)
    ]


def _as_attachments(
    state: AnswerState, parts: list[tuple[str, str]], summary: str
) -> list[SlackMessage]:
    bodies: list[list[str]] = [[]]
    for _, text in parts:
        body = bodies[-1]
        if body and sum(len(t) + 2 for t in body) + len(text) > ATTACHMENT_CHARS:
            bodies.append([])
        bodies[-1].append(text)
    color = COLORS[_health(state)]
    out: list[SlackMessage] = []
    for index, body in enumerate(bodies, start=1):
        title = TITLE if len(bodies) == 1 else f"{TITLE} ({index}/{len(bodies)})"
        text = _part_text(summary, index, len(bodies))
        attachment = {
            "color": color,
            "fallback": text,
            "title": title,
            "text": "\n\n".join(body),
            "mrkdwn_in": ["text"],
        }
        out.append(SlackMessage(text, attachments=[attachment]))
    return out


def _child(kind: str, text: str) -> dict[str, Any]:
    if kind == "context":
        return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _container_chars(container: dict[str, Any]) -> int:
    total = len(container["title"]["text"]) + len(container["subtitle"]["text"])
    for child in container["child_blocks"]:
        text = child["text"] if child["type"] == "section" else child["elements"][0]
        total += len(text["text"])
    return total


def _part_text(summary: str, index: int, total: int) -> str:
    return summary if total == 1 else f"{summary} (part {index}/{total})"


def _health(state: AnswerState) -> str:
    statuses = {d.status for d in state.delegations}
    if statuses & {"failed", "error", "interrupted"}:
        return "bad"
    return "ok" if statuses <= {"completed"} else "warn"
