"""Pure planning: desired spec + local files + observed Powabase state → ordered actions.

No I/O here. Each :class:`Action` says what happens to one resource (create / update / skip), why,
and the JSON body to send; ids that do not exist yet (a KB created earlier in the same run) are
resolved by name when the action is applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from provisioning.api import (
    RemoteAgent,
    RemoteEntity,
    RemoteKnowledgeBase,
    RemoteOrchestration,
    RemoteSource,
)
from provisioning.sources import LocalSource
from provisioning.spec import AgentSpec, KnowledgeBaseSpec, OrchestrationSpec, Spec


class Verb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"


class Kind(StrEnum):
    KNOWLEDGE_BASE = "knowledge_base"
    SOURCE = "source"
    AGENT = "agent"
    AGENT_KNOWLEDGE_BASE = "agent_kb"
    ORCHESTRATION = "orchestration"
    ENTITY = "entity"


@dataclass(frozen=True)
class Action:
    """What to do to one resource. ``body`` is the create payload or the changed fields."""

    kind: Kind
    verb: Verb
    name: str
    detail: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)
    remote_id: str | None = None
    source: LocalSource | None = None
    replaces: tuple[str, ...] = ()  # source ids a changed file supersedes
    agent: str | None = None  # for agent_kb and entity actions
    knowledge_base: str | None = None  # for source and agent_kb actions


@dataclass(frozen=True)
class RemoteState:
    """What Powabase holds now, keyed by our names (first match when a name is taken twice)."""

    knowledge_bases: Mapping[str, RemoteKnowledgeBase] = field(default_factory=dict)
    kb_sources: Mapping[str, list[RemoteSource]] = field(default_factory=dict)
    agents: Mapping[str, RemoteAgent] = field(default_factory=dict)
    agent_kb_ids: Mapping[str, set[str]] = field(default_factory=dict)
    orchestration: RemoteOrchestration | None = None
    entities: list[RemoteEntity] = field(default_factory=list)


def kb_body(kb: KnowledgeBaseSpec) -> dict[str, Any]:
    return {
        "name": kb.name,
        "description": kb.description,
        "indexing_config": {
            "strategy": kb.indexing_strategy,
            "embedding_model": kb.embedding_model,
        },
    }


def agent_body(agent: AgentSpec) -> dict[str, Any]:
    return {
        "name": agent.name,
        "model": agent.model,
        "system_prompt": agent.system_prompt,
        "settings": dict(agent.settings),
    }


def orchestration_body(orch: OrchestrationSpec) -> dict[str, Any]:
    return {
        "name": orch.name,
        "description": orch.description,
        "strategy": orch.strategy,
        "orchestrator_config": dict(orch.orchestrator_config),
    }


def source_metadata(source: LocalSource) -> dict[str, Any]:
    """What we store with each upload; ``sha256`` is how a later run recognises unchanged files."""
    return {
        "sha256": source.sha256,
        "path": source.name,
        "knowledge_base": source.knowledge_base,
        "provisioned_by": "powabot",
    }


def _missing_keys(desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> list[str]:
    """Keys of ``desired`` whose value ``actual`` lacks (extra server-side defaults are fine)."""
    actual = actual or {}
    return [key for key, value in desired.items() if actual.get(key) != value]


def _merged(desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(actual or {}), **desired}


def plan_knowledge_base(kb: KnowledgeBaseSpec, remote: RemoteKnowledgeBase | None) -> Action:
    if remote is None:
        return Action(Kind.KNOWLEDGE_BASE, Verb.CREATE, kb.name, "new", body=kb_body(kb))
    detail = "exists"
    if (remote.description or "") != kb.description:
        detail = "exists (description differs; Powabase has no KB update call, left as is)"
    return Action(Kind.KNOWLEDGE_BASE, Verb.SKIP, kb.name, detail, remote_id=remote.id)


def plan_source(local: LocalSource, attached: list[RemoteSource]) -> Action:
    """Skip when an attached source has this content; re-upload when the file changed.

    Sources are matched by name (or ``metadata.path``) and compared by the ``sha256`` we store in
    their metadata. Older versions of the same file still attached are detached (``replaces``).
    """
    same_name = [s for s in attached if local.name in (s.name, s.metadata.get("path"))]
    current = next((s for s in [*same_name, *attached] if s.sha256 == local.sha256), None)
    stale = tuple(s.id for s in same_name if s.sha256 != local.sha256)
    base = Action(
        Kind.SOURCE,
        Verb.CREATE,
        local.label,
        f"new file ({local.size} bytes)",
        source=local,
        knowledge_base=local.knowledge_base,
        replaces=stale,
    )
    if current is not None and not stale:
        return replace(base, verb=Verb.SKIP, detail="unchanged", remote_id=current.id)
    if current is not None:
        detail = "uploaded already; detach the previous version"
        return replace(base, verb=Verb.UPDATE, detail=detail, remote_id=current.id)
    if same_name:
        old = ", ".join(s.sha256[:12] if s.sha256 else "unknown" for s in same_name)
        detail = f"content changed (sha256 {old} → {local.sha256[:12]})"
        return replace(base, verb=Verb.UPDATE, detail=detail)
    return base


def plan_agent(agent: AgentSpec, remote: RemoteAgent | None) -> Action:
    if remote is None:
        return Action(Kind.AGENT, Verb.CREATE, agent.name, "new", body=agent_body(agent))
    changes: dict[str, Any] = {}
    if remote.model != agent.model:
        changes["model"] = agent.model
    if (remote.system_prompt or "").strip() != agent.system_prompt:
        changes["system_prompt"] = agent.system_prompt
    if _missing_keys(agent.settings, remote.settings):
        changes["settings"] = _merged(agent.settings, remote.settings)
    if changes:
        detail = f"changed: {', '.join(changes)}"
        return Action(Kind.AGENT, Verb.UPDATE, agent.name, detail, changes, remote_id=remote.id)
    return Action(Kind.AGENT, Verb.SKIP, agent.name, "unchanged", remote_id=remote.id)


def plan_agent_kb(agent: AgentSpec, state: RemoteState) -> Action:
    name = f"{agent.name} → {agent.knowledge_base}"
    kb = state.knowledge_bases.get(agent.knowledge_base)
    assigned = state.agent_kb_ids.get(agent.name, set())
    verb, detail = (Verb.SKIP, "assigned") if kb and kb.id in assigned else (Verb.CREATE, "assign")
    return Action(
        Kind.AGENT_KNOWLEDGE_BASE,
        verb,
        name,
        detail,
        agent=agent.name,
        knowledge_base=agent.knowledge_base,
    )


def plan_orchestration(orch: OrchestrationSpec, remote: RemoteOrchestration | None) -> Action:
    if remote is None:
        return Action(Kind.ORCHESTRATION, Verb.CREATE, orch.name, "new", orchestration_body(orch))
    changes: dict[str, Any] = {}
    if (remote.description or "").strip() != orch.description:
        changes["description"] = orch.description
    if remote.strategy is not None and remote.strategy != orch.strategy:
        changes["strategy"] = orch.strategy
    if _missing_keys(orch.orchestrator_config, remote.orchestrator_config):
        changes["orchestrator_config"] = _merged(
            orch.orchestrator_config, remote.orchestrator_config
        )
    if changes:
        detail = f"changed: {', '.join(changes)}"
        return Action(Kind.ORCHESTRATION, Verb.UPDATE, orch.name, detail, changes, remote.id)
    return Action(Kind.ORCHESTRATION, Verb.SKIP, orch.name, "unchanged", remote_id=remote.id)


def plan_entities(spec: Spec, state: RemoteState) -> list[Action]:
    """One action per entity; an existing entity is found by the id of its agent."""
    actions: list[Action] = []
    for entity in spec.orchestration.entities:
        remote_agent = state.agents.get(entity.agent)
        existing = next(
            (
                e
                for e in state.entities
                if remote_agent is not None and e.entity_ref_id == remote_agent.id
            ),
            None,
        )
        if existing is None:
            actions.append(
                Action(
                    Kind.ENTITY,
                    Verb.CREATE,
                    entity.agent,
                    "add to orchestration",
                    body={"entity_type": "agent", "role_description": entity.role_description},
                    agent=entity.agent,
                )
            )
        elif (existing.role_description or "").strip() != entity.role_description:
            actions.append(
                Action(
                    Kind.ENTITY,
                    Verb.UPDATE,
                    entity.agent,
                    "changed: role_description",
                    body={"role_description": entity.role_description},
                    remote_id=existing.id,
                    agent=entity.agent,
                )
            )
        else:
            actions.append(
                Action(
                    Kind.ENTITY,
                    Verb.SKIP,
                    entity.agent,
                    "unchanged",
                    remote_id=existing.id,
                    agent=entity.agent,
                )
            )
    return actions


def plan(spec: Spec, local: Mapping[str, list[LocalSource]], state: RemoteState) -> list[Action]:
    """Every action, in the order the backend needs them applied."""
    actions = [
        plan_knowledge_base(kb, state.knowledge_bases.get(kb.name)) for kb in spec.knowledge_bases
    ]
    for kb in spec.knowledge_bases:
        attached = state.kb_sources.get(kb.name, [])
        actions.extend(plan_source(source, attached) for source in local.get(kb.name, []))
    actions.extend(plan_agent(agent, state.agents.get(agent.name)) for agent in spec.agents)
    actions.extend(plan_agent_kb(agent, state) for agent in spec.agents)
    actions.append(plan_orchestration(spec.orchestration, state.orchestration))
    actions.extend(plan_entities(spec, state))
    return actions


def drift_warnings(
    spec: Spec, local: Mapping[str, list[LocalSource]], state: RemoteState
) -> list[str]:
    """Remote things the spec does not mention; we never delete them, but we say so (pure)."""
    warnings: list[str] = []
    for kb in spec.knowledge_bases:
        names = {s.name for s in local.get(kb.name, [])}
        for source in state.kb_sources.get(kb.name, []):
            if source.name not in names and source.metadata.get("path") not in names:
                warnings.append(
                    f"{kb.name}: source {source.name or source.id!r} ({source.id}) has no file in "
                    f"{kb.source_folder}; left attached"
                )
    wanted = {
        state.agents[e.agent].id for e in spec.orchestration.entities if e.agent in state.agents
    }
    for entity in state.entities:
        if entity.entity_ref_id not in wanted:
            warnings.append(
                f"{spec.orchestration.name}: entity {entity.id} (agent {entity.entity_ref_id}) is "
                "not in the spec; left in place"
            )
    return warnings


def format_plan(actions: list[Action]) -> str:
    """The plan as aligned text lines, one per resource (pure, for --dry-run and the log)."""
    lines = []
    for action in actions:
        detail = f"  ({action.detail})" if action.detail else ""
        lines.append(f"  {action.verb.value:<7} {action.kind.value:<14} {action.name}{detail}")
    return "\n".join(lines)
