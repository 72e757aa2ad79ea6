"""One measured figure of the benchmark, with its goal and verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    key: str
    phase: str
    label: str
    value: float | None
    display: str
    goal: str
    passed: bool | None  # None: informational, no goal

    @property
    def result(self) -> str:
        if self.value is None:
            return "MISSING"
        return "info" if self.passed is None else ("PASS" if self.passed else "MISS")
