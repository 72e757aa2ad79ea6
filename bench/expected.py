"""What Slack should finally show for one upstream run, according to the bot's own renderer.

The expected answer is `render_answer` of the state the bot ends in: the run's recorded events
(`chunk` and `complete` carry the full text, so `content_delta` payloads are not needed) are
replayed through `AnswerState.apply`, so the state is DONE with `text == run.answer` and the same
delegations. Comparing against the renderer (rather than against `run.answer` itself) checks
exactly the claim under test: under load, every answer's last edit is the complete render, not a
truncated or stale intermediate one. The renderer's own correctness is tested elsewhere.

A message the bot streamed natively (chat.startStream … stopStream) to its end shows Markdown,
which Slack renders itself: its expected text is the safe Markdown the bot streams
(`bot.render.answer.answer_markdown` of the final text, what `bot.slack.native.safe_markdown`
sends), compared without trailing whitespace (a stream never sends whitespace alone at the end).

Sources: after `complete` the bot reads the run detail and ends the answer with the documents it
names. Given the same detail (`bench.details`), the expected answer ends with the same sources
line. An answer shown without it (the bot's detail lookup failed or was late, which leaves the
answer without sources by design) still counts as exact when the rest is; `Outcome.sources`
tells the two apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.powabase.events import parse_event
from bot.powabase.sources import searched_knowledge_bases, sources_from_run
from bot.render import render_answer, render_trace
from bot.render.answer import answer_markdown
from bot.render.sources import sources_markdown
from bot.state import AnswerState, Phase
from sandbox.powabase import RunRecord


def complete_written(run: RunRecord) -> bool:
    """The stand-in wrote `complete` even though the run's status does not say `completed`.

    The bot closes the stream as soon as `complete` arrives; the stand-in's handler can then fail
    or be cancelled in a later write (`write_eof`) and label the run `cancelled`, or be cancelled
    while awaiting the `complete` write itself, after its final `chunk` was recorded. Either way
    the answer was sent; whether the bot got it is judged on the Slack text.
    """
    if run.status == "completed":
        return False
    names = [name for _t, name in run.events]
    return "complete" in names or (run.status == "cancelled" and "chunk" in names)


def replay(run: RunRecord, detail: Any = None) -> AnswerState:
    """The bot's final state for `run`, rebuilt from the stand-in's record of what it sent;
    with the run's `detail` (what the bot reads after `complete`), also the sources the bot
    names from it (`bot.powabase.sources`), as the bot does for a completed, delegated run."""
    state = AnswerState(question=run.message, started_at=0.0)
    payloads = list(run.event_payloads)
    if not any(p.get("event") == "complete" for p in payloads) and complete_written(run):
        payloads.append(
            {
                "event": "complete",
                "run_id": run.run_id,
                "session_id": run.session_id,
                "content": run.answer,
                "status": "completed",
                "usage": run.usage,
                "error": None,
            }
        )
    for step, payload in enumerate(payloads, start=1):
        state.apply(parse_event(None, json.dumps(payload)), float(step))
    if detail is not None and state.phase is Phase.DONE and state.delegations:
        searched = searched_knowledge_bases(state.delegations)
        state.sources = sources_from_run(detail, searched_kbs=searched)
    return state


def expected_messages(run: RunRecord, detail: Any = None) -> tuple[list[Any], list[Any]]:
    """(answer messages, trace messages) the renderer produces for the finished run (with the
    sources named by `detail`, when given)."""
    state = replay(run, detail)
    return list(render_answer(state)), list(render_trace(state))


def native_text(run: RunRecord, detail: Any = None) -> str:
    """What a natively streamed answer finally shows: the safe Markdown of the final text, then
    the sources line (`bot.render.sources.sources_markdown`) when `detail` names sources; for a
    run that ended with no text, what the classic render shows instead."""
    state = replay(run, detail)
    if not state.text.strip():
        return render_answer(state)[-1].text
    text = answer_markdown(state.text)
    if state.sources:
        return f"{text.rstrip()}\n\n{sources_markdown(state.sources)}"
    return text


def native_problem(shown: Any, run: RunRecord, detail: Any = None) -> str | None:
    """None when a natively streamed message was stopped and shows exactly the answer's safe
    Markdown (and the sources line `detail` gives), else what differs."""
    if shown.stream_state != "stopped":
        return f"native stream ended {shown.stream_state!r}, not stopped"
    want = native_text(run, detail).rstrip()
    got = shown.text.rstrip()
    if got != want:
        return f"native text differs: shown {_clip(got)!r}, expected {_clip(want)!r}"
    return None


def payload_problem(shown: Any, expected: Any) -> str | None:
    """None when a stored Slack message shows exactly the expected payload, else what differs."""
    if shown.text != expected.text:
        return f"text differs: shown {_clip(shown.text)!r}, expected {_clip(expected.text)!r}"
    if (shown.blocks or None) != (expected.blocks or None):
        return "blocks differ"
    if (shown.attachments or None) != (expected.attachments or None):
        return "attachments differ"
    return None


def messages_problem(shown: Sequence[Any], expected: Sequence[Any]) -> str | None:
    """Compare the first len(expected) bot replies of a thread with the expected answer."""
    if len(shown) < len(expected):
        return f"{len(shown)} bot replies, expected at least {len(expected)}"
    for index, (got, want) in enumerate(zip(shown, expected, strict=False)):
        problem = payload_problem(got, want)
        if problem is not None:
            return f"message {index + 1}: {problem}"
    return None


def _clip(text: str, size: int = 80) -> str:
    return text if len(text) <= size else text[: size // 2] + " … " + text[-size // 2 :]
