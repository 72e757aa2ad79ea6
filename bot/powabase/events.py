"""Typed Powabase orchestration stream events, and the one pure function that builds them.

`parse_event(sse_event, data)` takes what an SSE decoder yields (the optional `event:` line and the
joined `data:` lines) and returns a typed event. The event name comes from the JSON ``event`` key,
falling back to the SSE ``event:`` line. Unknown names become :class:`UnknownEvent`; they are
never an error, because the engine grows new event types over time.

Parsing never raises: the models are lenient about scalar types (numbers are accepted where text
is expected, `seq` may be a string, `ts` a number), and a known event whose fields still do not
fit becomes an :class:`UnknownEvent` holding the raw frame, so one odd frame cannot end an answer.
The two events that end a run (`complete`, `error`) keep their type instead, with the unusable
fields at their defaults. Each such frame is logged (`powabase_event_invalid`): at warning level
the first time per event name, at debug level after that.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

log = structlog.get_logger(__name__)


class StreamEvent(BaseModel):
    """Base of every event; extra fields are kept, missing optional fields default, and numbers
    sent where text is expected (ids, deltas) are read as their text."""

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)
    name: ClassVar[str] = ""
    event: str = ""
    seq: int | str | None = None
    ts: str | float | None = None


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
    """The run's end. Only status "completed" is an answer; "failed" (with ``error``),
    "cancelled", "timeout" or anything else is a run that ended without one."""

    name: ClassVar[str] = "complete"
    run_id: str | None = None
    session_id: str | None = None
    content: str | None = None
    status: str = "completed"
    steps: int | None = None
    usage: dict[str, Any] | None = None
    error: Any = None

    @property
    def succeeded(self) -> bool:
        """The run finished with an answer (status "completed")."""
        return self.status.strip().lower() == "completed"


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


# Events that end a run: kept under their own type even when some fields are unusable.
TERMINAL_TYPES: frozenset[type[StreamEvent]] = frozenset({CompleteEvent, ErrorEvent})

# Event names whose invalid frames were already reported at warning level (later ones: debug).
_REPORTED_INVALID: set[str] = set()


def _problems(exc: ValidationError) -> list[str]:
    """Where and how the fields were wrong, without the values (they may hold user text)."""
    return [
        f"{'.'.join(str(part) for part in error['loc']) or '<frame>'}: {error['type']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _report_invalid(name: str, exc: ValidationError) -> None:
    level = log.debug if name in _REPORTED_INVALID else log.warning
    _REPORTED_INVALID.add(name)
    level("powabase_event_invalid", event_name=name, problems=_problems(exc))


def _unknown(name: str, payload: dict[str, Any], data: str) -> UnknownEvent:
    """An UnknownEvent keeping ``payload``'s fields and the raw frame; never raises."""
    try:
        return UnknownEvent.model_validate({**payload, "event": name, "raw": data})
    except ValidationError:
        # Even seq/ts are unusable: keep everything else as extra fields, drop those two.
        extras = {k: v for k, v in payload.items() if k not in UnknownEvent.model_fields}
        return UnknownEvent.model_construct(event=name, raw=data, **extras)


def _salvage(
    cls: type[StreamEvent], fields: dict[str, Any], data: str, exc: ValidationError
) -> StreamEvent:
    """``cls`` with the fields that failed left at their defaults and the frame in ``raw``.

    Used for the events that end a run: as UnknownEvents they would turn a finished answer into
    "stream ended without `complete`".
    """
    bad = {str(error["loc"][0]) for error in exc.errors(include_url=False) if error["loc"]}
    kept = {k: v for k, v in fields.items() if k not in bad}
    try:
        return cls.model_validate({**kept, "raw": data})
    except ValidationError:
        return _unknown(str(fields["event"]), fields, data)


def parse_event(sse_event: str | None, data: str) -> StreamEvent:
    """Build a typed event from one SSE frame's `event:` line (may be None) and its data.

    Never raises: frames that are not JSON objects, unknown names and known names with fields of
    an unusable shape come back as :class:`UnknownEvent` with the frame in ``raw`` (except
    `complete` / `error`, salvaged under their own type).
    """
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
        return _unknown(name, payload, data)
    fields = dict(payload)
    fields["event"] = name
    if cls is OrchestrationStartedEvent and "name" in fields:
        fields["orchestration_name"] = fields.pop("name")
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        # A known name with fields of an unexpected shape: keep it, don't crash the answer.
        _report_invalid(name, exc)
        if cls in TERMINAL_TYPES:
            return _salvage(cls, fields, data, exc)
        return _unknown(name, payload, data)
