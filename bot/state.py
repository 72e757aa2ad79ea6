"""What one answer looks like at any instant, and how each stream event changes it.

`AnswerState.apply(event, now)` is deterministic and does no I/O: give it the same events and
clock readings and it ends in the same state. The renderer turns this state into Slack payloads;
the publisher sends them. Nothing here knows about Slack.

Only what the renderer and the trace read is kept, and in bounded sizes: specialists' streamed
reports are not accumulated (the trace shows their searches, not their text), texts from the
stream (tasks, queries, result previews) are cut to `FIELD_CHARS`, and at most `MAX_DELEGATIONS`
delegations and `MAX_TOOL_STEPS` tool steps per list are recorded. The answer text itself grows
with the stream, in linear time (appended in pieces, joined when read), up to `MAX_TEXT_CHARS`;
past that `text_capped` is set and the rest is not kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.powabase.events import (
    ChunkEvent,
    CompleteEvent,
    ContentDeltaEvent,
    DelegationCompletedEvent,
    DelegationStartedEvent,
    ErrorEvent,
    OrchestrationCompletedEvent,
    StartEvent,
    StreamEvent,
    ToolCallEvent,
    ToolResultEvent,
)

if TYPE_CHECKING:
    from bot.powabase.sources import Source

DELEGATE_PREFIX = "delegate_to_"
# Bounds on what one answer keeps of the trace (far above what the trace shows).
FIELD_CHARS = 1000
MAX_DELEGATIONS = 50
MAX_TOOL_STEPS = 100
# The most answer text one answer keeps. Slack shows far less (bot/render/answer.py:
# MAX_ANSWER_MESSAGES, NATIVE_MAX_CHARS, about 15-17,500 characters); the rest is kept for the
# full answer attached to a truncated one. Past this the stream's text is dropped.
MAX_TEXT_CHARS = 200_000


class Phase(enum.StrEnum):
    WAITING = "waiting"  # nothing heard yet from Powabase
    WORKING = "working"  # the coordinator is routing / specialists are searching
    STREAMING = "streaming"  # answer text is arriving
    DONE = "done"  # `complete` arrived; text is final
    FAILED = "failed"  # the run ended without a full answer; `error` says why


class ErrorKind(enum.StrEnum):
    """Why an answer could not be completed; the renderer picks the user's words from this."""

    UNAVAILABLE = "unavailable"  # Powabase unreachable or failing: connect error, 5xx, 429
    MISCONFIGURED = "misconfigured"  # our key or ids are refused (401/403/404): operator must act
    REJECTED = "rejected"  # Powabase turned this request down (another 4xx)
    RUN_FAILED = "run_failed"  # an `error` event, or `complete` with a status but completed
    INTERRUPTED = "interrupted"  # stream broke off, ended without `complete`, or sent junk
    TIMEOUT = "timeout"  # Powabase went silent for too long
    SHUTDOWN = "shutdown"  # the bot is stopping with this answer in flight
    BUSY = "busy"  # too many questions already waiting (POWABOT_MAX_QUEUED): not queued
    STOPPED = "stopped"  # the user stopped it (Stop button, or "stop" in the thread)
    NO_QUESTION = "no_question"  # the message had no text to ask (e.g. only a file)
    INTERNAL = "internal"  # a bug on our side


# `error` event codes meaning our own settings are wrong: an unknown orchestration may be
# reported as an `error` event (HTTP 200, before `start`) instead of a 404.
MISCONFIGURED_RUN_CODES = frozenset({"not_found"})


def run_error_kind(code: str | None) -> ErrorKind:
    """The kind of a run that ended with an `error` event carrying ``code``."""
    return ErrorKind.MISCONFIGURED if code in MISCONFIGURED_RUN_CODES else ErrorKind.RUN_FAILED


@dataclass(frozen=True)
class AnswerError:
    kind: ErrorKind
    detail: str = ""  # for logs and the trace; never shown to the user verbatim


class ActivityKind(enum.StrEnum):
    THINKING = "thinking"  # the coordinator is reading the question
    DELEGATING = "delegating"  # asking a specialist (agent)
    SEARCHING = "searching"  # a knowledge-base search (query)
    TOOL = "tool"  # some other tool (tool)
    SYNTHESIZING = "synthesizing"  # specialists are done, the coordinator writes the answer


@dataclass(frozen=True)
class Activity:
    """What the orchestration is doing right now, before (or between) answer text."""

    kind: ActivityKind
    agent: str | None = None
    query: str | None = None
    tool: str | None = None


@dataclass
class ToolStep:
    tool_name: str
    call_id: str | None
    query: str | None
    result_preview: str | None = None
    duration_ms: float | None = None


@dataclass
class Delegation:
    agent: str
    task: str | None
    child_execution_id: str | None
    started_at: float
    completed_at: float | None = None
    status: str | None = None
    steps: int | None = None
    usage: dict[str, Any] | None = None
    tool_calls: list[ToolStep] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        return None if self.completed_at is None else self.completed_at - self.started_at


class _TextBuffer:
    """Answer text appended in pieces (linear time, not a string copy per delta), joined when
    read, and never longer than `MAX_TEXT_CHARS`."""

    __slots__ = ("capped", "pieces", "size")

    def __init__(self, text: str = "") -> None:
        self.pieces: list[str] = []
        self.size = 0
        self.capped = False
        self.append(text)

    def append(self, piece: str) -> None:
        room = MAX_TEXT_CHARS - self.size
        if len(piece) > room:
            piece, self.capped = piece[:room], True
        if piece:
            self.pieces.append(piece)
            self.size += len(piece)

    def read(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""


class _Text:
    """The `AnswerState.text` field: reads and assignments go through a `_TextBuffer`."""

    def __get__(self, obj: AnswerState | None, owner: type | None = None) -> str:
        if obj is None:
            return ""  # the field's default (dataclasses ask the class)
        return obj._text_buffer.read()

    def __set__(self, obj: AnswerState, value: str) -> None:
        obj._text_buffer = _TextBuffer(value)


def _bounded(text: str | None) -> str | None:
    """``text`` cut to `FIELD_CHARS` characters (the trace shortens further when it shows it)."""
    return text[:FIELD_CHARS] if text else text


def _query_of(arguments: Any) -> str | None:
    if isinstance(arguments, dict):
        for key in ("query", "q", "question", "task", "search"):
            value = arguments.get(key)
            if isinstance(value, str) and value:
                return _bounded(value)
        return None
    if isinstance(arguments, str) and arguments:
        return _bounded(arguments)
    return None


@dataclass
class AnswerState:
    """One answer in progress; mutate only through `apply`, `fail` and `mark_stalled`."""

    question: str = ""
    started_at: float = 0.0
    phase: Phase = Phase.WAITING
    activity: Activity | None = None
    text: _Text = _Text()  # a str (see `_Text`): the answer so far, at most MAX_TEXT_CHARS
    run_id: str | None = None
    session_id: str | None = None
    delegations: list[Delegation] = field(default_factory=list)
    coordinator_tools: list[ToolStep] = field(default_factory=list)
    # Specialists the coordinator has asked for (its `delegate_to_<agent>` tool calls), in
    # order: a step that delegates to several names them all before the first one starts.
    planned: list[str] = field(default_factory=list)
    # The documents the answer rests on, read from the run detail after `complete`.
    sources: list[Source] = field(default_factory=list)
    sources_shown: bool = False  # the answer's message shows them (a native stream's stop)
    usage: dict[str, Any] | None = None
    steps: int | None = None
    error: AnswerError | None = None
    stalled: bool = False
    queued: bool = False  # waiting for a free answer slot (POWABOT_MAX_IN_FLIGHT): "in line"
    after_previous: bool = False  # a follow-up waiting for the answer before it in its thread
    ended_at: float | None = None
    unknown_events: int = 0
    _open: dict[str, Delegation] = field(default_factory=dict, repr=False)
    _calls: dict[str, ToolStep] = field(default_factory=dict, repr=False)
    _text_buffer: _TextBuffer = field(init=False, repr=False, compare=False)

    @property
    def text_capped(self) -> bool:
        """The stream sent more than `MAX_TEXT_CHARS` of answer text: the rest was dropped."""
        return self._text_buffer.capped

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def _current_delegation(self) -> Delegation | None:
        return next(reversed(self._open.values()), None) if self._open else None

    def apply(self, event: StreamEvent, now: float) -> None:
        """Fold one stream event into the state."""
        if self.finished:
            return
        self.stalled = False
        if self.phase is Phase.WAITING:
            self.phase = Phase.WORKING
            self.activity = Activity(ActivityKind.THINKING)
        match event:
            case StartEvent():
                self.run_id = event.run_id or self.run_id
                self.session_id = event.session_id or self.session_id
            case DelegationStartedEvent():
                agent = _bounded(event.agent) or ""
                task, child = _bounded(event.task), _bounded(event.child_execution_id)
                started = Delegation(agent, task, child, started_at=now)
                if len(self.delegations) < MAX_DELEGATIONS:
                    self.delegations.append(started)
                if len(self._open) >= MAX_DELEGATIONS:  # never closed: forget the oldest
                    del self._open[next(iter(self._open))]
                self._open[child or f"{agent}#{len(self.delegations)}"] = started
                if self.phase is Phase.WORKING:
                    self.activity = Activity(ActivityKind.DELEGATING, agent=agent)
            case DelegationCompletedEvent():
                key = _bounded(event.child_execution_id)
                d = self._open.pop(key, None) if key else None
                if d is None:  # match by agent when ids are missing
                    for k, candidate in list(self._open.items()):
                        if candidate.agent == _bounded(event.agent):
                            d = self._open.pop(k)
                            break
                if d is not None:
                    d.completed_at = now
                    d.status, d.steps, d.usage = event.status, event.steps, event.usage
                if not self._open and self.phase is Phase.WORKING:
                    self.activity = Activity(ActivityKind.SYNTHESIZING)
            case ToolCallEvent():
                if event.tool_name.startswith(DELEGATE_PREFIX):
                    # delegation_started tells the rest of the story, with more detail
                    if len(self.planned) < MAX_DELEGATIONS:
                        self.planned.append(_bounded(event.tool_name[len(DELEGATE_PREFIX) :]) or "")
                    return
                tool = _bounded(event.tool_name) or ""
                step = ToolStep(tool, _bounded(event.call_id), _query_of(event.arguments))
                current = self._current_delegation()
                steps = current.tool_calls if current else self.coordinator_tools
                if len(steps) < MAX_TOOL_STEPS:
                    steps.append(step)
                    if step.call_id:
                        self._calls[step.call_id] = step
                if self.phase is Phase.WORKING:
                    searching = "search" in event.tool_name or "knowledge" in event.tool_name
                    self.activity = Activity(
                        ActivityKind.SEARCHING if searching else ActivityKind.TOOL,
                        agent=current.agent if current else None,
                        query=step.query,
                        tool=tool,
                    )
            case ToolResultEvent():
                call_id = _bounded(event.call_id)
                found = self._calls.pop(call_id, None) if call_id else None
                if found is not None:
                    found.result_preview = _bounded(event.result_preview)
                    found.duration_ms = event.duration_ms
            case ContentDeltaEvent():
                # Inside a delegation it is the specialist's report to the coordinator: not the
                # answer, and not kept (nothing shows it).
                if event.delta and self._current_delegation() is None:
                    self._text_buffer.append(event.delta)
                    self.phase = Phase.STREAMING
                    self.activity = None
            case ChunkEvent():
                if event.content:
                    self.text = event.content
            case OrchestrationCompletedEvent():
                self.usage = event.usage or self.usage
                self.steps = event.steps or self.steps
            case CompleteEvent():
                if event.content:
                    self.text = event.content
                self.run_id = event.run_id or self.run_id
                self.session_id = event.session_id or self.session_id
                self.usage = event.usage or self.usage
                self.steps = event.steps or self.steps
                self.activity = None
                self.ended_at = now
                if not event.succeeded:
                    error = f": {event.error}" if event.error else ""
                    detail = f"run ended with status {event.status!r}{error}"[:FIELD_CHARS]
                    self.error = AnswerError(ErrorKind.RUN_FAILED, detail)
                    self.phase = Phase.FAILED
                else:
                    self.phase = Phase.DONE
            case ErrorEvent():
                self.fail(run_error_kind(event.code), event.message[:FIELD_CHARS], now)
            case _:
                if event.event not in ("orchestration_started", "step_started", "step_completed"):
                    self.unknown_events += 1

    def fail(self, kind: ErrorKind, detail: str, now: float) -> None:
        """End the answer without a full reply; whatever text arrived stays."""
        if self.finished:
            return
        self.error = AnswerError(kind, detail)
        self.phase = Phase.FAILED
        self.activity = None
        self.ended_at = now
        for d in self._open.values():
            d.status = d.status or "interrupted"
        self._open.clear()

    def mark_stalled(self) -> None:
        """Nothing arrived for a while: the renderer shows a gentle "still working" note."""
        if not self.finished:
            self.stalled = True
