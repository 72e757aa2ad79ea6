"""Read what Powabase already holds for the names a spec uses (only GET calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar, cast

from provisioning.api import (
    PowabaseAdmin,
    RemoteAgent,
    RemoteEntity,
    RemoteKnowledgeBase,
    RemoteOrchestration,
    RemoteSource,
)
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
    found_lists = await gather_or_cancel(
        gather_or_cancel(*(limited(partial(admin.find_knowledge_bases, n)) for n in kb_names)),
        gather_or_cancel(*(limited(partial(admin.find_agents, n)) for n in agent_names)),
        gather_or_cancel(admin.find_orchestrations(spec.orchestration.name)),
    )
    kb_found = cast(list[list[RemoteKnowledgeBase]], found_lists[0])
    agent_found = cast(list[list[RemoteAgent]], found_lists[1])
    orch_found = cast(list[list[RemoteOrchestration]], found_lists[2])[0]
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
                *(limited(partial(admin.get_source, s)) for s in dict.fromkeys(ids))
            )
        )

    lists = await gather_or_cancel(
        gather_or_cancel(*(attached_sources(kb.id) for kb in kbs.values())),
        gather_or_cancel(
            *(limited(partial(admin.agent_knowledge_base_ids, a.id)) for a in agents.values())
        ),
        gather_or_cancel(admin.list_entities(orchestration.id) if orchestration else _nothing()),
    )
    kb_sources_list = cast(list[list[RemoteSource]], lists[0])
    agent_kbs_list = cast(list[set[str]], lists[1])
    entities = cast(list[list[RemoteEntity]], lists[2])[0]
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
