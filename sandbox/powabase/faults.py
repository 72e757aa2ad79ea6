"""Fault injection for the Powabase stand-in: queued run faults and path-matched API faults."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Literal

RunFaultKind = Literal[
    "status",
    "html_status",
    "error_event",
    "early_error",
    "drop",
    "drop_at_start",
    "no_complete",
    "delay",
    "failed",
    "unknown_events",
    "malformed_events",
]
RUN_FAULT_KINDS: frozenset[str] = frozenset(RunFaultKind.__args__)  # type: ignore[attr-defined]


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


class FaultPlan:
    """The faults still to be served, consumed in the order they were injected."""

    def __init__(self) -> None:
        self.run_faults: list[RunFault] = []
        self.api_faults: list[ApiFault] = []

    def next_run_fault(self) -> RunFault | None:
        """Take one use of the oldest pending run fault."""
        while self.run_faults:
            fault = self.run_faults[0]
            if fault.remaining <= 0:
                self.run_faults.pop(0)
                continue
            fault.remaining -= 1
            if fault.remaining == 0:
                self.run_faults.pop(0)
            return fault
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
