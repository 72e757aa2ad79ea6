"""Read what Powabase already holds for the names a spec uses (only GET calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from provisioning.api import PowabaseAdmin, RemoteEntity, RemoteSource
from provisioning.plan import RemoteState
from provisioning.spec import Spec
from provisioning.tasks import gather_or_cancel

T = TypeVar("T")


async def observe(
    admin: PowabaseAdmin, spec: Spec, *, concurrency: int = 4
) -> tuple[RemoteState, list[str]]:
    """The remote state keyed by our names, plus warnings (e.g. a name used twice remotely)."""
    limit = asyncio.Semaphore(concurrency)
    warnings: list[str] = []

    async def limited(call: Callable[[], Awaitable[T]]) -> T:
        async with limit:
            return await call()

    def first(kind: str, name: str, found: list[T]) -> T | None:
        if len(found) > 1:
            warnings.append(f"{len(found)} {kind}s are named {name!r}; using the first one")
        return found[0] if found else None

    kb_names = [kb.name for kb in spec.knowledge_bases]
    agent_names = [agent.name for agent in spec.agents]
    kb_found, agent_found, orch_found = await gather_or_cancel(
        gather_or_cancel(*(limited(lambda n=n: admin.find_knowledge_bases(n)) for n in kb_names)),
        gather_or_cancel(*(limited(lambda n=n: admin.find_agents(n)) for n in agent_names)),
        admin.find_orchestrations(spec.orchestration.name),
    )
    kbs = {
        name: kb
        for name, found in zip(kb_names, kb_found, strict=True)
        if (kb := first("knowledge base", name, found)) is not None
    }
    agents = {
        name: agent
        for name, found in zip(agent_names, agent_found, strict=True)
        if (agent := first("agent", name, found)) is not None
    }
    orchestration = first("orchestration", spec.orchestration.name, orch_found)

    async def attached_sources(kb_id: str) -> list[RemoteSource]:
        ids = await limited(lambda: admin.knowledge_base_source_ids(kb_id))
        return list(
            await gather_or_cancel(
                *(limited(lambda s=s: admin.get_source(s)) for s in dict.fromkeys(ids))
            )
        )

    kb_sources_list, agent_kbs_list, entities = await gather_or_cancel(
        gather_or_cancel(*(attached_sources(kb.id) for kb in kbs.values())),
        gather_or_cancel(
            *(limited(lambda a=a: admin.agent_knowledge_base_ids(a.id)) for a in agents.values())
        ),
        admin.list_entities(orchestration.id) if orchestration else _nothing(),
    )
    state = RemoteState(
        knowledge_bases=kbs,
        kb_sources=dict(zip(kbs, kb_sources_list, strict=True)),
        agents=agents,
        agent_kb_ids=dict(zip(agents, agent_kbs_list, strict=True)),
        orchestration=orchestration,
        entities=list(entities),
    )
    return state, warnings


async def _nothing() -> list[RemoteEntity]:
    return []
