"""The answer state follows a supervisor run: activity first, coordinator text, then final."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bot.powabase.events import ContentDeltaEvent, parse_event
from bot.state import (
    FIELD_CHARS,
    MAX_DELEGATIONS,
    MAX_TEXT_CHARS,
    MAX_TOOL_STEPS,
    ActivityKind,
    AnswerState,
    ErrorKind,
    Phase,
)


def feed(state: AnswerState, frames: list[dict[str, Any]], start: float = 0.0) -> None:
    for i, frame in enumerate(frames):
        state.apply(parse_event(None, json.dumps(frame)), start + i)


RUN = [
    {"event": "start", "run_id": "orch_run_a", "session_id": "orch_sess_a"},
    {"event": "orchestration_started", "strategy": "supervisor", "name": "Support"},
    {"event": "tool_call", "tool_name": "delegate_to_billing-agent", "arguments": {"task": "x"}},
    {
        "event": "delegation_started",
        "agent": "billing-agent",
        "task": "refund window",
        "child_execution_id": "c1",
    },
    {
        "event": "tool_call",
        "tool_name": "knowledge_search",
        "arguments": {"query": "refund window pro"},
        "call_id": "k1",
    },
    {
        "event": "tool_result",
        "tool_name": "knowledge_search",
        "call_id": "k1",
        "result_preview": "30 days",
        "duration_ms": 120,
    },
    {"event": "content_delta", "delta": "Specialist report"},
    {
        "event": "delegation_completed",
        "agent": "billing-agent",
        "child_execution_id": "c1",
        "status": "completed",
        "usage": {"total_tokens": 90},
    },
    {"event": "content_delta", "delta": "Pro plans can be refunded "},
    {"event": "content_delta", "delta": "within 30 days."},
    {"event": "chunk", "content": "Pro plans can be refunded within **30 days**."},
    {
        "event": "complete",
        "run_id": "orch_run_a",
        "session_id": "orch_sess_a",
        "content": "Pro plans can be refunded within **30 days**.",
        "status": "completed",
        "usage": {"total_tokens": 300},
    },
]


def test_activity_names_specialist_and_search_before_text() -> None:
    """Before any answer text, the state says who is asked and what is searched."""
    state = AnswerState()
    feed(state, RUN[:4])
    assert state.phase is Phase.WORKING
    assert state.activity is not None and state.activity.kind is ActivityKind.DELEGATING
    assert state.activity.agent == "billing-agent"
    feed(state, RUN[4:5], start=4)
    assert state.activity is not None and state.activity.kind is ActivityKind.SEARCHING
    assert state.activity.query == "refund window pro"


def test_specialist_report_is_not_the_answer() -> None:
    """Text streamed inside a delegation is neither the user's answer nor kept in memory."""
    state = AnswerState()
    feed(state, RUN[:8])
    assert state.text == ""
    assert "Specialist report" not in repr(state)
    assert state.activity is not None and state.activity.kind is ActivityKind.SYNTHESIZING


def test_complete_content_is_authoritative_and_trace_is_kept() -> None:
    """The final text is complete.content; delegation duration, search and usage are kept."""
    state = AnswerState()
    feed(state, RUN)
    assert state.phase is Phase.DONE
    assert state.text == "Pro plans can be refunded within **30 days**."
    d = state.delegations[0]
    assert d.agent == "billing-agent" and d.duration_s == 4.0 and d.usage == {"total_tokens": 90}
    assert d.tool_calls[0].query == "refund window pro" and d.tool_calls[0].duration_ms == 120
    assert state.session_id == "orch_sess_a" and state.usage == {"total_tokens": 300}


def test_streaming_text_accumulates_outside_delegations() -> None:
    """Coordinator deltas build the visible answer progressively."""
    state = AnswerState()
    feed(state, RUN[:10])
    assert state.phase is Phase.STREAMING
    assert state.text == "Pro plans can be refunded within 30 days."


def test_failed_complete_and_error_event_keep_partial_text() -> None:
    """A failed run keeps what arrived and records why."""
    state = AnswerState()
    feed(state, [*RUN[:9], {"event": "error", "error": {"message": "provider down"}}])
    assert state.phase is Phase.FAILED and state.text == "Pro plans can be refunded "
    assert state.error is not None and state.error.kind is ErrorKind.RUN_FAILED
    failed = AnswerState()
    feed(failed, [RUN[0], {"event": "complete", "status": "failed", "error": "boom"}])
    assert failed.phase is Phase.FAILED


def test_unknown_events_change_nothing_visible() -> None:
    """Events this version does not know are counted, not shown."""
    state = AnswerState()
    feed(state, [RUN[0], {"event": "hook_result", "x": 1}, {"event": "step_reset"}])
    assert state.unknown_events == 2 and state.text == ""


@pytest.mark.parametrize("status", ["cancelled", "timeout", "paused", "", "failed"])
def test_complete_with_any_status_but_completed_is_a_failure(status: str) -> None:
    """A `complete` whose status is not "completed" ends the answer failed, text kept as partial."""
    state = AnswerState()
    complete = {"event": "complete", "status": status, "content": "Pro plans can"}
    feed(state, [RUN[0], complete])
    assert state.phase is Phase.FAILED and state.text == "Pro plans can"
    assert state.error is not None and state.error.kind is ErrorKind.RUN_FAILED
    assert repr(status) in state.error.detail


def test_a_hostile_trace_stays_bounded() -> None:
    """Thousands of delegations and searches with huge texts keep only bounded trace data."""
    huge = "x" * 50_000
    frames: list[dict[str, Any]] = [RUN[0]]
    for n in range(MAX_TOOL_STEPS + 50):
        call = {"event": "tool_call", "tool_name": "knowledge_search", "call_id": f"k{n}"}
        frames.append({**call, "arguments": {"query": huge}})
        frames.append({"event": "tool_result", "call_id": f"k{n}", "result_preview": huge})
    for _ in range(MAX_DELEGATIONS + 20):
        frames.append({"event": "delegation_started", "agent": huge, "task": huge})
        frames.append({"event": "content_delta", "delta": huge})
    state = AnswerState()
    feed(state, frames)
    steps = state.coordinator_tools
    assert len(steps) == MAX_TOOL_STEPS
    assert all(len(s.query or "") == FIELD_CHARS for s in steps)
    assert all(len(s.result_preview or "") == FIELD_CHARS for s in steps)
    assert len(state.delegations) == MAX_DELEGATIONS
    assert len(state.delegations[0].task or "") == FIELD_CHARS
    assert state.text == ""
    assert len(repr(state)) < 4 * FIELD_CHARS * (MAX_DELEGATIONS + MAX_TOOL_STEPS)


def test_an_unknown_orchestration_error_event_is_misconfiguration() -> None:
    """An early `error` with code not_found (a wrong orchestration id) is a setup problem."""
    state = AnswerState()
    feed(state, [{"event": "error", "error": "Orchestration not found", "code": "not_found"}])
    assert state.error is not None and state.error.kind is ErrorKind.MISCONFIGURED


def test_an_endless_answer_is_kept_up_to_the_cap_and_marked() -> None:
    """A stream sending far more text than any reply can hold keeps MAX_TEXT_CHARS and says so;
    a final `complete` just as long is cut the same way."""
    state = AnswerState()
    feed(state, [RUN[0]])
    piece = ContentDeltaEvent(event="content_delta", delta="Refunds take 30 days. ")
    for _ in range(MAX_TEXT_CHARS // len(piece.delta) + 1000):
        state.apply(piece, 1.0)
    assert len(state.text) == MAX_TEXT_CHARS and state.text_capped
    assert state.text.startswith("Refunds take 30 days. Refunds")
    assert state.phase is Phase.STREAMING
    short = AnswerState()
    feed(short, [RUN[0], {"event": "content_delta", "delta": "Short."}])
    assert short.text == "Short." and not short.text_capped
    final = AnswerState()
    feed(final, [RUN[0], {"event": "complete", "status": "completed", "content": "y" * 300_000}])
    assert len(final.text) == MAX_TEXT_CHARS and final.text_capped


def test_collecting_answer_text_takes_linear_time() -> None:
    """200,000 one-character deltas, read now and then as the renderer does, are collected in
    well under the seconds that copying the text on every delta (quadratic) takes."""
    state = AnswerState()
    feed(state, [RUN[0]])
    piece = ContentDeltaEvent(event="content_delta", delta="x")
    started = time.perf_counter()
    for n in range(MAX_TEXT_CHARS):
        state.apply(piece, 1.0)
        if n % 2000 == 0:
            assert len(state.text) == n + 1
    elapsed = time.perf_counter() - started
    assert len(state.text) == MAX_TEXT_CHARS and not state.text_capped
    assert elapsed < 3.0, f"{elapsed:.1f}s for {MAX_TEXT_CHARS} deltas"
