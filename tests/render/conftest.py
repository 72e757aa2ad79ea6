"""Fixtures for renderer tests: answer states built by feeding real stream events to the reducer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from bot.powabase.events import parse_event
from bot.state import AnswerState

Frame = dict[str, Any]
Build = Callable[..., AnswerState]


def feed(state: AnswerState, frames: Iterable[Frame], *, start: float, step: float) -> float:
    """Apply each frame as the SSE `data:` JSON Powabase sends; returns the last clock value."""
    now = start
    for frame in frames:
        now += step
        state.apply(parse_event(None, json.dumps(frame)), now)
    return now


@pytest.fixture
def build() -> Build:
    """`build(frames, step=0.5)` → the AnswerState after applying every frame in order."""

    def _build(frames: Iterable[Frame], *, step: float = 0.5) -> AnswerState:
        state = AnswerState(question="How long is the refund window?", started_at=100.0)
        feed(state, frames, start=100.0, step=step)
        return state

    return _build


def _delegation(
    agent: str,
    exec_id: str,
    *,
    task: str = "Find the refund window",
    searches: Iterable[tuple[str, str]] = (),
    usage: dict[str, int] | None = None,
) -> list[Frame]:
    """The frames of one specialist run: started, searches (query, preview), completed."""
    frames: list[Frame] = [
        {"event": "tool_call", "tool_name": f"delegate_to_{agent}", "arguments": {"task": task}},
        {
            "event": "delegation_started",
            "agent": agent,
            "task": task,
            "child_execution_id": exec_id,
        },
    ]
    for n, (query, preview) in enumerate(searches):
        call = f"{exec_id}-c{n}"
        frames.append(
            {
                "event": "tool_call",
                "tool_name": "knowledge_base_search",
                "arguments": {"query": query},
                "call_id": call,
            }
        )
        frames.append(
            {
                "event": "tool_result",
                "tool_name": "knowledge_base_search",
                "call_id": call,
                "result_preview": preview,
                "duration_ms": 120 + n,
            }
        )
    frames.append(
        {
            "event": "delegation_completed",
            "agent": agent,
            "child_execution_id": exec_id,
            "status": "completed",
            "steps": 2,
            "usage": usage or {"input_tokens": 700, "output_tokens": 112},
        }
    )
    return frames


@pytest.fixture
def delegation() -> Callable[..., list[Frame]]:
    """`delegation(agent, exec_id, task=…, searches=[(query, preview)], usage=…)` → frames."""
    return _delegation
