"""Fault injection for the Powabase stand-in: queued run faults, random chaos, and API faults.

Run faults bend one `POST /api/orchestrations/{id}/run/stream` each, oldest first
(``pb.inject_run_fault(kind, times=…, …)``):

    status          HTTP ``status`` before any stream, JSON ``{"error": body}`` (401/403/404 for
                    a wrong key or id, 429 or 5xx for an overloaded or failing backend), with a
                    ``Retry-After: <retry_after>`` header when given
    html_status     the same with an HTML error page (framework aborts, crashes)
    text_status     the same with a plain-text body, as Envoy / load balancers answer
                    ("upstream connect error or disconnect/reset before headers…")
    early_error     HTTP 200 whose only event is `error` (code not_found), before `start`
    error_event     `error` after ``after_deltas`` final-answer deltas
    drop            the connection is cut after ``after_deltas`` final-answer deltas
    drop_at_start   HTTP 200 and headers, then the connection is cut before any event
    no_complete     the stream ends cleanly after orchestration_completed, without `complete`
    failed          `complete` with status "failed" and ``body`` as its error
    ended           `complete` with status ``run_status`` ("cancelled", "timeout", anything)
                    after ``after_deltas`` deltas, and no `chunk`
    delay           ``delay`` seconds of silence (keepalives only) before `start`
    stall           after ``after_deltas`` final deltas, ``delay`` seconds without a single byte
                    (no keepalives either: a hung upstream or proxy), then the rest of the run
    oversize_frame  after ``after_deltas`` final deltas, one `data:` line of ``frame_chars``
                    characters (a content_delta), sent in pieces, then the rest of the run
    unknown_events  events a newer engine emits, between the usual ones
    malformed_events known events with fields of unexpected types, the answer text unchanged

Chaos (``pb.faults.chaos(rate=0.2, seed=1)``): every run without a queued fault gets, with
probability ``rate``, one fault drawn from ``kinds`` (default: a JSON or plain-text 500/502/503,
a ``stall`` of ``stall`` seconds, a mid-stream ``drop``), from a `random.Random(seed)` so a
sequence of runs is reproducible. Each run's fault is in ``RunRecord.fault``; ``chaos_drawn``
counts them by kind. ``pb.faults.chaos(rate=0)`` turns chaos off.

API faults (``pb.inject_api_fault(method, glob, status=…)``) answer an error to matching
requests of the other endpoints (provisioning, history).

Run-detail faults bend the next ``times`` `GET /api/orchestrations/runs/{run_id}` answers
(``pb.inject_detail_fault(kind, …)``):

    not_found   404 ``{"error": "Run not found"}``, as for a run the backend no longer keeps
    slow        ``delay`` seconds before the usual answer
    odd_shape   200 with ``body`` (any JSON value) or, without one, `ODD_DETAIL`: the documented
                keys with missing fields, wrong types and junk where documents should be
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

RunFaultKind = Literal[
    "status",
    "html_status",
    "text_status",
    "error_event",
    "early_error",
    "drop",
    "drop_at_start",
    "no_complete",
    "delay",
    "stall",
    "failed",
    "ended",
    "oversize_frame",
    "unknown_events",
    "malformed_events",
]
RUN_FAULT_KINDS: frozenset[str] = frozenset(RunFaultKind.__args__)  # type: ignore[attr-defined]
# Faults that end before any stream: plain HTTP error answers.
STATUS_KINDS = frozenset({"status", "html_status", "text_status"})
# What chaos draws from by default: failures real proxies and backends produce under load.
CHAOS_KINDS: tuple[str, ...] = ("status", "text_status", "stall", "drop")
CHAOS_STATUSES: tuple[int, ...] = (500, 502, 503)
PROXY_RESET_TEXT = (
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)


@dataclass
class RunFault:
    """One planned misbehaviour of a `run/stream` request (see PowabaseStandin.inject_run_fault)."""

    kind: RunFaultKind
    remaining: int
    status: int = 500
    body: str | None = None
    after_deltas: int = 3
    delay: float = 1.0
    retry_after: str | None = None
    run_status: str = "cancelled"
    frame_chars: int = 2 * 1024 * 1024


DetailFaultKind = Literal["not_found", "slow", "odd_shape"]
DETAIL_FAULT_KINDS: frozenset[str] = frozenset(DetailFaultKind.__args__)  # type: ignore[attr-defined]
# A run detail of the right kind (a JSON object) whose fields are missing or of the wrong type.
ODD_DETAIL: dict[str, Any] = {
    "run_id": 42,
    "status": None,
    "content": ["not", "text"],
    "child_runs": [
        None,
        "child",
        {"tool_calls": {"result": 1}, "citations": 7},
        {
            "run_id": "exec_odd",
            "tool_calls": [
                {"tool_name": 7, "result": ["x"]},
                {"tool_name": "knowledge_search", "result": "{not json"},
                {"tool_name": "knowledge_search", "result": {"results": [{"title": ["x"]}]}},
                {"tool_name": "knowledge_search", "result": {"results": "none"}},
                {"tool_name": "knowledge_search"},
            ],
            "citations": [{"url": "javascript:alert(1)", "title": None}, 3, [], None],
        },
    ],
}


@dataclass
class DetailFault:
    """One planned misbehaviour of run-detail requests (see PowabaseStandin.inject_detail_fault)."""

    kind: DetailFaultKind
    remaining: int
    delay: float = 1.0
    body: Any = None


@dataclass
class ApiFault:
    """An error answer for requests matching ``method`` and the glob ``path_pattern``."""

    method: str
    path_pattern: str
    status: int
    remaining: int
    skip: int
    body: dict[str, Any] | None

    def matches(self, method: str, path: str) -> bool:
        return method.upper() == self.method.upper() and fnmatch.fnmatchcase(
            path, self.path_pattern
        )


@dataclass
class Chaos:
    """Random run faults: each run draws one with probability ``rate`` (see module docstring)."""

    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    stall: float
    statuses: tuple[int, ...]

    def draw(self) -> RunFault | None:
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.kinds)
        if kind not in RUN_FAULT_KINDS:
            raise ValueError(f"unknown chaos fault kind {kind!r}")
        return RunFault(
            kind,  # type: ignore[arg-type]
            remaining=1,
            status=self.rng.choice(self.statuses),
            after_deltas=self.rng.randint(0, 5),
            delay=self.stall,
            body=PROXY_RESET_TEXT if kind == "text_status" else None,
        )


class FaultPlan:
    """The faults still to be served, consumed in the order they were injected."""

    def __init__(self) -> None:
        self.run_faults: list[RunFault] = []
        self.api_faults: list[ApiFault] = []
        self.detail_faults: list[DetailFault] = []
        self.chaos_plan: Chaos | None = None
        self.chaos_drawn: Counter[str] = Counter()

    def chaos(
        self,
        rate: float = 0.2,
        seed: int | None = None,
        *,
        kinds: tuple[str, ...] = CHAOS_KINDS,
        stall: float = 2.0,
        statuses: tuple[int, ...] = CHAOS_STATUSES,
    ) -> None:
        """From now on, each run without a queued fault fails at random (``rate`` 0 stops it)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"chaos rate must be within [0, 1], got {rate}")
        unknown = set(kinds) - RUN_FAULT_KINDS
        if unknown or not kinds:
            raise ValueError(f"chaos kinds must be run fault kinds, got {sorted(unknown)}")
        self.chaos_plan = (
            Chaos(rate, random.Random(seed), tuple(kinds), stall, tuple(statuses))
            if rate > 0
            else None
        )

    def next_run_fault(self) -> RunFault | None:
        """Take one use of the oldest pending run fault, or draw one if chaos is on."""
        while self.run_faults:
            fault = self.run_faults[0]
            if fault.remaining <= 0:
                self.run_faults.pop(0)
                continue
            fault.remaining -= 1
            if fault.remaining == 0:
                self.run_faults.pop(0)
            return fault
        drawn = self.chaos_plan.draw() if self.chaos_plan else None
        if drawn is not None:
            self.chaos_drawn[drawn.kind] += 1
        return drawn

    def next_detail_fault(self) -> DetailFault | None:
        """Take one use of the oldest pending run-detail fault."""
        while self.detail_faults:
            fault = self.detail_faults[0]
            if fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.detail_faults.pop(0)
                return fault
            self.detail_faults.pop(0)
        return None

    def api_fault_for(self, method: str, path: str) -> ApiFault | None:
        """The API fault that fires for this request, counting skips and uses."""
        for fault in self.api_faults:
            if fault.remaining <= 0 or not fault.matches(method, path):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            fault.remaining -= 1
            return fault
        return None
