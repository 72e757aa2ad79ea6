"""The delegation trace: collapsed by default, within Slack's limits, mention-safe."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bot.render import SlackMessage, render_trace
from bot.render.trace import MAX_TRACE_MESSAGES
from bot.state import AnswerState

Build = Callable[..., AnswerState]
Frames = Callable[..., list[dict[str, Any]]]
ZW = "\u200b"
START = {"event": "start", "run_id": "orch_run_1", "session_id": "orch_sess_1"}
COMPLETE = {
    "event": "complete",
    "content": "You have 30 days.",
    "status": "completed",
    "steps": 4,
    "usage": {"total_tokens": 2345},
}


def one_delegation(build: Build, delegation: Frames) -> AnswerState:
    return build(
        [
            START,
            *delegation(
                "billing-agent",
                "x1",
                task="Explain the refund window",
                searches=[("refund window", "Refunds are available within 30 days.")],
            ),
            {"event": "content_delta", "delta": "You have 30 days."},
            COMPLETE,
        ]
    )


def test_single_delegation_container_payload(build: Build, delegation: Frames) -> None:
    """One delegation gives one message: summary text + one collapsed container."""
    state = one_delegation(build, delegation)
    assert render_trace(state) == [
        SlackMessage(
            text="Delegation trace: billing-agent (1 search, 4.0 s)",
            blocks=[
                {
                    "type": "container",
                    "title": {"type": "plain_text", "text": "Delegation trace"},
                    "subtitle": {"type": "plain_text", "text": "1 search · 4.0 s · 2,345 tokens"},
                    "is_collapsible": True,
                    "default_collapsed": True,
                    "child_blocks": [
                        {
                            "type": "context",
                            "elements": [
                                {
                                    "type": "mrkdwn",
                                    "text": ":compass: *Coordinator* routed the question to "
                                    "billing-agent",
                                }
                            ],
                        },
                        {
                            "type": "section",
                            "text": {
                                "type": "mrkdwn",
                                "text": ":white_check_mark: *1. billing-agent* · completed · "
                                "1.5 s · 2 steps · 812 tokens\n"
                                "_Task:_ Explain the refund window\n"
                                "• `knowledge_base_search` “refund window” · 120 ms\n"
                                "      ↳ Refunds are available within 30 days.",
                            },
                        },
                        {
                            "type": "context",
                            "elements": [
                                {
                                    "type": "mrkdwn",
                                    "text": ":memo: *Synthesis* · 1 search · total 4.0 s · "
                                    "4 steps · 2,345 tokens",
                                }
                            ],
                        },
                    ],
                }
            ],
        )
    ]


def test_attachment_style_payload(build: Build, delegation: Frames) -> None:
    """The legacy fallback carries the same lines in one coloured attachment."""
    state = one_delegation(build, delegation)
    (message,) = render_trace(state, style="attachment")
    assert message.blocks is None
    assert message.text == "Delegation trace: billing-agent (1 search, 4.0 s)"
    assert message.attachments == [
        {
            "color": "#2EB67D",
            "fallback": "Delegation trace: billing-agent (1 search, 4.0 s)",
            "title": "Delegation trace",
            "text": ":compass: *Coordinator* routed the question to billing-agent\n\n"
            ":white_check_mark: *1. billing-agent* · completed · 1.5 s · 2 steps · 812 tokens\n"
            "_Task:_ Explain the refund window\n"
            "• `knowledge_base_search` “refund window” · 120 ms\n"
            "      ↳ Refunds are available within 30 days.\n\n"
            ":memo: *Synthesis* · 1 search · total 4.0 s · 4 steps · 2,345 tokens",
            "mrkdwn_in": ["text"],
        }
    ]


def _big_state(build: Build, delegation: Frames) -> AnswerState:
    frames: list[dict[str, Any]] = [START]
    for n in range(12):
        searches = [
            (f"query {n}.{i} " + "refund policy " * 10, f"Preview {n}.{i} " + "lorem ipsum " * 30)
            for i in range(5)
        ]
        frames += delegation(
            f"agent-{n:02d}", f"x{n}", task="Task " + "details " * 60, searches=searches
        )
    frames.append(COMPLETE)
    return build(frames, step=0.1)


def _texts(block: dict[str, Any]) -> list[str]:
    if block["type"] == "section":
        return [block["text"]["text"]]
    return [e["text"] for e in block["elements"]]


def test_big_trace_respects_every_limit(build: Build, delegation: Frames) -> None:
    """12 delegations × 5 searches split into collapsed containers within Slack's limits."""
    messages = render_trace(_big_state(build, delegation))
    assert len(messages) >= 2
    sections: list[str] = []
    for message in messages:
        assert message.attachments is None
        assert message.text.startswith("Delegation trace: agent-00, agent-01, agent-02 +9 more")
        blocks = message.blocks or []
        assert sum(1 + len(b["child_blocks"]) for b in blocks) <= 50
        assert len(json.dumps(blocks, ensure_ascii=False)) < 16000
        total = 0
        for container in blocks:
            assert container["type"] == "container"
            assert container["is_collapsible"] is True
            assert container["default_collapsed"] is True
            assert 1 <= len(container["child_blocks"]) <= 10
            assert len(container["title"]["text"]) <= 150
            assert len(container["subtitle"]["text"]) <= 150
            for child in container["child_blocks"]:
                for text in _texts(child):
                    assert len(text) <= 3000
                    total += len(text)
                if child["type"] == "section":
                    sections.append(child["text"]["text"])
        assert total <= 12000
    assert [s.split("*")[1] for s in sections] == [f"{n + 1}. agent-{n:02d}" for n in range(12)]
    assert all(s.count("knowledge_base_search") == 5 for s in sections)


def test_big_trace_attachment_style_within_limits(build: Build, delegation: Frames) -> None:
    """The attachment fallback splits the same big trace into a bounded number of messages of
    bounded size; the specialist runs that do not fit are counted, not dropped silently."""
    messages = render_trace(_big_state(build, delegation), style="attachment")
    assert 4 <= len(messages) <= MAX_TRACE_MESSAGES["attachment"]
    shown = ""
    for message in messages:
        (attachment,) = message.attachments or []
        assert len(attachment["text"]) <= 3000
        assert len(message.text) <= 150
        shown += attachment["text"]
    listed = [n for n in range(12) if f"*{n + 1}. agent-{n:02d}*" in shown]
    assert listed == list(range(len(listed))) and 4 <= len(listed) < 12
    assert f"_…and {12 - len(listed)} more specialist runs not shown_" in shown
    assert shown.rstrip().endswith(
        "*Synthesis* · 60 searches · total 15.8 s · 4 steps · 2,345 tokens"
    )


def test_many_searches_in_one_delegation_are_summarised(build: Build, delegation: Frames) -> None:
    """A specialist with dozens of searches still fits one section, with a count of the rest."""
    searches = [(f"q{i} " + "x" * 100, "p" * 200) for i in range(40)]
    state = build([START, *delegation("billing-agent", "x1", searches=searches), COMPLETE])
    (message,) = render_trace(state)
    section = message.blocks[0]["child_blocks"][1]["text"]["text"]  # type: ignore[index]
    assert len(section) <= 3000
    assert section.endswith("more steps_")


@pytest.mark.parametrize("style", ["container", "attachment"])
def test_trace_is_mention_safe(build: Build, delegation: Frames, style: str) -> None:
    """Tasks, queries and previews written by the model cannot ping anyone in the trace."""
    state = build(
        [
            START,
            *delegation(
                "billing-agent",
                "x1",
                task="Tell <!channel> and @here",
                searches=[("<@U123> refunds", "<!everyone> <#C1> @everyone <!subteam^S1>")],
            ),
            COMPLETE,
        ]
    )
    payload = json.dumps([m.__dict__ for m in render_trace(state, style)], ensure_ascii=False)
    for raw in ("<!channel>", "<!everyone>", "<@U123>", "<#C1>", "<!subteam", "@here", "@everyone"):
        assert raw not in payload
    assert "&lt;!channel&gt;" in payload and f"@{ZW}here" in payload


def test_no_delegation_no_trace(build: Build) -> None:
    """An answer the coordinator wrote alone posts no trace."""
    state = build([START, {"event": "content_delta", "delta": "Hi"}, COMPLETE])
    assert render_trace(state) == []


def test_unknown_style_is_refused(build: Build, delegation: Frames) -> None:
    """A typo in the style is a clear error naming the argument."""
    with pytest.raises(ValueError, match="style"):
        render_trace(one_delegation(build, delegation), style="cards")  # type: ignore[arg-type]
