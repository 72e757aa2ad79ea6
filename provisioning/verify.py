"""Smoke check: ask the orchestration eval questions and see which specialist it delegates to.

Each question is streamed through ``POST /api/orchestrations/{id}/run/stream`` with httpx-sse; the
only parsing is ``json.loads`` of each frame's data and reading its ``event`` key. The delegated
specialists are the ``agent`` fields of ``delegation_started`` events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import yaml
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter, ValidationError

from bot.errors import ProvisioningError
from provisioning.spec import field_path


class EvalItem(BaseModel):
    """One eval question and the specialist that should answer it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    question: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    expected: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


@dataclass(frozen=True)
class Routing:
    """Where one question went: ``actual`` lists the delegated agents in order."""

    question: str
    expected: str
    actual: tuple[str, ...]
    error: str = ""

    @property
    def correct(self) -> bool:
        return not self.error and set(self.actual) == {self.expected}


@dataclass
class VerifyReport:
    routings: list[Routing] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.routings)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.routings) if self.routings else 0.0

    @property
    def ok(self) -> bool:
        return bool(self.routings) and self.correct == len(self.routings)

    def lines(self) -> list[str]:
        out = []
        for r in self.routings:
            mark = "ok  " if r.correct else "MISS"
            actual = ", ".join(r.actual) or "(no delegation)"
            tail = f"  error: {r.error}" if r.error else ""
            out.append(
                f"  {mark} expected {r.expected:<16} actual {actual:<16} {r.question!r}{tail}"
            )
        out.append(f"routing accuracy: {self.correct}/{len(self.routings)} ({self.accuracy:.0%})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": len(self.routings),
            "routings": [
                {
                    "question": r.question,
                    "expected": r.expected,
                    "actual": list(r.actual),
                    "correct": r.correct,
                    "error": r.error,
                }
                for r in self.routings
            ],
        }


def load_eval(path: Path) -> list[EvalItem]:
    """Read the eval YAML: ``{question, expected}`` items, as a list or under ``questions:``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvisioningError(f"{path}: cannot read eval file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ProvisioningError(f"{path}: not valid YAML: {exc}") from exc
    prefix: tuple[str, ...] = ()
    if isinstance(data, dict) and "questions" in data:  # {questions: [...]} or a bare list
        data, prefix = data["questions"], ("questions",)
    try:
        items = TypeAdapter(list[EvalItem]).validate_python(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {path}: {field_path((*prefix, *e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ProvisioningError(f"invalid eval file {path}:\n{problems}") from exc
    if not items:
        raise ProvisioningError(f"{path}: the eval file lists no questions")
    return items


def pick_questions(items: list[EvalItem], *, every: bool) -> list[EvalItem]:
    """All items, or the first question for each expected specialist (pure)."""
    if every:
        return list(items)
    seen: set[str] = set()
    picked = []
    for item in items:
        if item.expected not in seen:
            seen.add(item.expected)
            picked.append(item)
    return picked


async def ask(client: httpx.AsyncClient, orchestration_id: str, item: EvalItem) -> Routing:
    """Stream one question and collect the specialists it was delegated to."""
    path = f"/api/orchestrations/{orchestration_id}/run/stream"
    agents: list[str] = []
    error = ""
    try:
        async with aconnect_sse(
            client, "POST", path, json={"message": item.question, "session_id": None}
        ) as source:
            if not source.response.is_success:
                await source.response.aread()
                excerpt = " ".join(source.response.text.split())[:200]
                raise ProvisioningError(
                    f"POST {path}: HTTP {source.response.status_code}: {excerpt}"
                )
            async for sse in source.aiter_sse():
                try:
                    data = json.loads(sse.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                name = data.get("event") or sse.event
                if name == "delegation_started" and isinstance(data.get("agent"), str):
                    agents.append(data["agent"])
                elif name == "error":
                    error = str(data.get("error") or "run failed")
                elif name == "complete":
                    if data.get("status") == "failed":
                        error = str(data.get("error") or "run failed")
                    break
    except (httpx.HTTPError, SSEError) as exc:
        raise ProvisioningError(f"POST {path}: stream failed: {type(exc).__name__}: {exc}") from exc
    return Routing(item.question, item.expected, tuple(agents), error)


async def verify(
    client: httpx.AsyncClient, orchestration_id: str, items: list[EvalItem]
) -> VerifyReport:
    """Ask each question in turn (runs are not cheap; no need to hurry a smoke check)."""
    report = VerifyReport()
    for item in items:
        report.routings.append(await ask(client, orchestration_id, item))
    return report
