"""Typed Powabase orchestration stream events, and the one pure function that builds them.

`parse_event(sse_event, data)` takes what an SSE decoder yields (the optional `event:` line and the
joined `data:` lines) and returns a typed event. The event name comes from the JSON ``event`` key,
falling back to the SSE ``event:`` line. Unknown names become :class:`UnknownEvent`; they are
never an error, because the engine grows new event types over time.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class StreamEvent(BaseModel):
    """Base of every event; extra fields are kept, missing optional fields default."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: ClassVar[str] = ""
    event: str = ""
    seq: int | None = None
    ts: str | None = None


class StartEvent(StreamEvent):
    name: ClassVar[str] = "start"
    run_id: str = ""
    session_id: str = ""
    reasoning_requested: bool = False


class OrchestrationStartedEvent(StreamEvent):
    name: ClassVar[str] = "orchestration_started"
    strategy: str | None = None
    orchestration_name: str | None = None


class OrchestrationCompletedEvent(StreamEvent):
    name: ClassVar[str] = "orchestration_completed"
    status: str | None = None
    steps: int | None = None
    usage: dict[str, Any] | None = None


class StepStartedEvent(StreamEvent):
    name: ClassVar[str] = "step_started"
    step: int | None = None
    is_last_step: bool | None = None


class StepCompletedEvent(StreamEvent):
    name: ClassVar[str] = "step_completed"
    step: int | None = None
    finish_reason: str | None = None
    has_tool_calls: bool | None = None


class ReasoningDeltaEvent(StreamEvent):
    name: ClassVar[str] = "reasoning_delta"
    step: int | None = None
    source: str | None = None
    delta: str = ""


class ReasoningEvent(StreamEvent):
    name: ClassVar[str] = "reasoning"
    step: int | None = None
    source: str | None = None
    content: str = ""


class ToolCallEvent(StreamEvent):
    name: ClassVar[str] = "tool_call"
    step: int | None = None
    tool_name: str = ""
    arguments: Any = None
    call_id: str | None = None


class ToolResultEvent(StreamEvent):
    name: ClassVar[str] = "tool_result"
    step: int | None = None
    tool_name: str = ""
    call_id: str | None = None
    result_preview: str | None = None
    result_meta: Any = None
    duration_ms: float | None = None


class DelegationStartedEvent(StreamEvent):
    name: ClassVar[str] = "delegation_started"
    agent: str = ""
    task: str | None = None
    child_execution_id: str | None = None


class DelegationCompletedEvent(StreamEvent):
    name: ClassVar[str] = "delegation_completed"
    agent: str = ""
    child_execution_id: str | None = None
    status: str | None = None
    steps: int | None = None
    usage: dict[str, Any] | None = None


class ContentDeltaEvent(StreamEvent):
    name: ClassVar[str] = "content_delta"
    delta: str = ""


class ChunkEvent(StreamEvent):
    name: ClassVar[str] = "chunk"
    content: str = ""


class CompleteEvent(StreamEvent):
    name: ClassVar[str] = "complete"
    run_id: str | None = None
    session_id: str | None = None
    content: str | None = None
    status: str = "completed"
    steps: int | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


class ErrorEvent(StreamEvent):
    name: ClassVar[str] = "error"
    error: Any = None
    code: str | None = None
    provider: str | None = None

    @property
    def message(self) -> str:
        if isinstance(self.error, dict):
            return str(self.error.get("message") or self.error)
        return str(self.error or "unknown error")


class UnknownEvent(StreamEvent):
    """An event this version does not know (hook_result, model_fallback, …), kept as-is."""

    name: ClassVar[str] = "unknown"
    raw: str = ""


EVENT_TYPES: dict[str, type[StreamEvent]] = {
    cls.name: cls
    for cls in (
        StartEvent,
        OrchestrationStartedEvent,
        OrchestrationCompletedEvent,
        StepStartedEvent,
        StepCompletedEvent,
        ReasoningDeltaEvent,
        ReasoningEvent,
        ToolCallEvent,
        ToolResultEvent,
        DelegationStartedEvent,
        DelegationCompletedEvent,
        ContentDeltaEvent,
        ChunkEvent,
        CompleteEvent,
        ErrorEvent,
    )
}


def parse_event(sse_event: str | None, data: str) -> StreamEvent:
    """Build a typed event from one SSE frame's `event:` line (may be None) and its data."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError:
        return UnknownEvent(event=sse_event or "message", raw=data)
    if not isinstance(payload, dict):
        return UnknownEvent(event=sse_event or "message", raw=data)
    name = payload.get("event")
    if not isinstance(name, str) or not name:
        name = payload.get("type") if isinstance(payload.get("type"), str) else None
    if not name:
        name = sse_event if sse_event and sse_event != "message" else "message"
    cls = EVENT_TYPES.get(name)
    if cls is None:
        return UnknownEvent.model_validate({**payload, "event": name, "raw": data})
    fields = dict(payload)
    fields["event"] = name
    if cls is OrchestrationStartedEvent and "name" in fields:
        fields["orchestration_name"] = fields.pop("name")
    try:
        return cls.model_validate(fields)
    except ValidationError:
        # A known name with fields of an unexpected shape: keep it, don't crash the answer.
        return UnknownEvent.model_validate({**payload, "event": name, "raw": data})
