"""In-memory records of the Powabase stand-in: knowledge bases, sources, agents, orchestrations,
sessions and runs. Plain dataclasses; the HTTP layer turns them into the wire shapes."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    """Current UTC time as an ISO 8601 string with milliseconds, as the backend writes them."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A fresh resource id (the backend uses UUIDs)."""
    return str(uuid.uuid4())


def short_hex() -> str:
    """Twelve hex digits, the suffix of run and session ids."""
    return secrets.token_hex(6)


@dataclass
class KnowledgeBase:
    id: str
    name: str
    description: str
    indexing_config: dict[str, Any]
    retrieval_config: dict[str, Any]
    created_at: str = field(default_factory=now_iso)


@dataclass
class Source:
    id: str
    name: str
    filename: str
    file_type: str
    text: str
    content_hash: str
    size: int
    metadata: dict[str, Any]
    polls: int = 0
    forced_status: str | None = None
    error_message: str = ""
    created_at: str = field(default_factory=now_iso)


@dataclass
class KbSourceLink:
    id: str
    knowledge_base_id: str
    source_id: str
    reads: int = 0
    created_at: str = field(default_factory=now_iso)


@dataclass
class Agent:
    id: str
    name: str
    model: str
    system_prompt: str
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)


@dataclass
class AgentKb:
    id: str
    agent_id: str
    knowledge_base_id: str
    config: dict[str, Any]


@dataclass
class Entity:
    id: str
    orchestration_id: str
    entity_type: str
    entity_ref_id: str
    role_description: str


@dataclass
class Orchestration:
    id: str
    name: str
    description: str
    strategy: str
    orchestrator_config: dict[str, Any]
    settings: dict[str, Any]
    created_at: str = field(default_factory=now_iso)


@dataclass
class Session:
    id: str
    orchestration_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    last_activity_at: str = field(default_factory=now_iso)


@dataclass
class ChildRun:
    """One specialist's run inside an orchestration run (a `child_runs[]` entry of the detail)."""

    run_id: str  # the delegation's child_execution_id
    agent: str
    task: str
    report: str = ""
    status: str = "running"
    steps: int = 0
    model: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunRecord:
    """What one `run/stream` request did, for tests and the latency benchmark."""

    orchestration_id: str
    message: str
    session_id_sent: str | None
    session_id: str = ""
    run_id: str = ""
    delegated_to: str | None = None
    task: str = ""
    child_execution_id: str = ""
    report: str = ""
    children: list[ChildRun] = field(default_factory=list)
    """Every delegation, in order (``delegated_to`` / ``task`` / ``report`` are the first's)."""
    answer: str = ""
    status: str = "running"
    error: str | None = None
    fault: str | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    event_payloads: list[dict[str, Any]] = field(default_factory=list)
    t_first_content_delta: float | None = None
    t_complete: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    completed_at: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when the server has finished with the request, however it ended."""


@dataclass
class Store:
    """Everything the stand-in remembers, keyed by id."""

    knowledge_bases: dict[str, KnowledgeBase] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    kb_sources: dict[str, KbSourceLink] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    agent_kbs: dict[str, AgentKb] = field(default_factory=dict)
    orchestrations: dict[str, Orchestration] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    def entities_of(self, orchestration_id: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.orchestration_id == orchestration_id]

    def kbs_of(self, agent_id: str) -> list[KnowledgeBase]:
        ids = [a.knowledge_base_id for a in self.agent_kbs.values() if a.agent_id == agent_id]
        return [self.knowledge_bases[i] for i in ids if i in self.knowledge_bases]

    def sources_of(self, kb_id: str) -> list[Source]:
        """Attached sources of a KB whose extraction succeeded (what its search tool can see)."""
        ids = [
            link.source_id for link in self.kb_sources.values() if link.knowledge_base_id == kb_id
        ]
        found = [self.sources[i] for i in ids if i in self.sources]
        return [s for s in found if s.forced_status in (None, "extracted")]

    def run_by_id(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs if r.run_id == run_id), None)
