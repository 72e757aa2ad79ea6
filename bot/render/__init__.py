"""Pure renderers: `AnswerState` → Slack payloads. No I/O, no await, no clock reads.

* :func:`render_answer` — the answer as thread messages (index 0 is the edited placeholder);
* :func:`render_trace` — the collapsed delegation trace posted after the answer;
* :func:`status_text` — one plain line for ``assistant.threads.setStatus``;
* :func:`to_mrkdwn` — Markdown → Slack mrkdwn, mention-safe.
"""

from bot.render.answer import render_answer, status_text
from bot.render.message import SlackMessage
from bot.render.mrkdwn import to_mrkdwn
from bot.render.trace import TraceStyle, render_trace

__all__ = [
    "SlackMessage",
    "TraceStyle",
    "render_answer",
    "render_trace",
    "status_text",
    "to_mrkdwn",
]
