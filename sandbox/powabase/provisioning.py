"""Admin endpoints of the stand-in: knowledge bases, sources, agents, orchestrations, entities.

Shapes follow the backend; where the cookbook recipe sends a different shape (top-level
`indexing_strategy`, agent `tools`, entity `{"agent_id", "role"}`) it is accepted too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import PurePath
from typing import Any

from aiohttp import web

from sandbox.powabase.context import CONTEXT, Context
from sandbox.powabase.replies import ApiError, dict_field, page, read_json, text_field
from sandbox.powabase.state import (
    Agent,
    AgentKb,
    Entity,
    KbSourceLink,
    KnowledgeBase,
    Orchestration,
    Source,
    new_id,
)

ALLOWED_TYPES = frozenset({"md", "markdown", "txt", "pdf", "docx"})
TEXT_TYPES = frozenset({"md", "markdown", "txt"})
STRATEGIES = frozenset({"supervisor", "sequential", "parallel"})
DEFAULT_INDEXING = {"strategy": "chunk_embed", "embedding_model": "text-embedding-3-small"}


def _find(table: dict[str, Any], key: str, what: str) -> Any:
    if key not in table:
        raise ApiError(404, f"{what} not found: {key}")
    return table[key]


# --- knowledge bases -------------------------------------------------------------------------


def kb_json(kb: KnowledgeBase) -> dict[str, Any]:
    return asdict(kb)


async def create_kb(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_json(request)
    indexing = {**DEFAULT_INDEXING, **dict_field(body, "indexing_config")}
    kb = KnowledgeBase(
        new_id(),
        text_field(body, "name", required=True),
        text_field(body, "description"),
        indexing,
        dict_field(body, "retrieval_config"),
    )
    if indexing["strategy"] not in ("chunk_embed", "page_index", "graph_index", "full_document"):
        raise ApiError(400, f"unknown indexing strategy: {indexing['strategy']}")
    ctx.store.knowledge_bases[kb.id] = kb
    ctx.store.counters["kb_created"] += 1
    return web.json_response(kb_json(kb), status=201)


async def list_kbs(request: web.Request) -> web.Response:
    items = [kb_json(kb) for kb in request.app[CONTEXT].store.knowledge_bases.values()]
    return web.json_response(page(request, "knowledge_bases", items))


async def get_kb(request: web.Request) -> web.Response:
    kbs = request.app[CONTEXT].store.knowledge_bases
    return web.json_response(kb_json(_find(kbs, request.match_info["kb_id"], "Knowledge base")))


async def update_kb(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    kb = _find(ctx.store.knowledge_bases, request.match_info["kb_id"], "Knowledge base")
    body = await read_json(request)
    kb.name = text_field(body, "name", default=kb.name)
    kb.description = text_field(body, "description", default=kb.description)
    if "indexing_config" in body:
        kb.indexing_config = {**kb.indexing_config, **dict_field(body, "indexing_config")}
    if "retrieval_config" in body:
        kb.retrieval_config = dict_field(body, "retrieval_config")
    ctx.store.counters["kb_updated"] += 1
    return web.json_response(kb_json(kb))


# --- sources ---------------------------------------------------------------------------------


def extraction_status(ctx: Context, source: Source) -> str:
    """pending → extracting → the final status (normally `extracted`) as polls accumulate."""
    final = source.forced_status or "extracted"
    if source.polls >= ctx.extraction_polls:
        return final
    return "pending" if source.polls == 0 else "extracting"


def source_json(ctx: Context, source: Source) -> dict[str, Any]:
    status = extraction_status(ctx, source)
    return {
        "id": source.id,
        "name": source.name,
        "file_name": source.filename,
        "file_type": source.file_type,
        "file_size": source.size,
        "content_hash": source.content_hash,
        "metadata": source.metadata,
        "extraction_status": status,
        "error_message": source.error_message if status == source.forced_status else None,
        "created_at": source.created_at,
    }


async def upload_source(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "upload must be multipart/form-data with a 'file' part")
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "'file' part is required")
    filename = PurePath(upload.filename or "").name
    file_type = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if file_type not in ALLOWED_TYPES:
        raise ApiError(400, f"file type not allowed: '{filename}' (allowed: .md .txt .pdf .docx)")
    data = upload.file.read()
    if not data:
        raise ApiError(400, f"file is empty: '{filename}'")
    metadata: Any = {}
    raw_meta = form.get("metadata")
    if isinstance(raw_meta, str) and raw_meta.strip():
        try:
            metadata = json.loads(raw_meta)
        except ValueError as exc:
            raise ApiError(400, f"'metadata' is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ApiError(400, "'metadata' must be a JSON object")
    digest = hashlib.sha256(data).hexdigest()
    duplicate = next((s for s in ctx.store.sources.values() if s.content_hash == digest), None)
    if duplicate is not None:
        ctx.store.counters["source_duplicate"] += 1
        raise ApiError(409, "duplicate_source", duplicate=source_json(ctx, duplicate))
    name = form.get("name")
    text = data.decode("utf-8", errors="replace") if file_type in TEXT_TYPES else ""
    source = Source(
        new_id(),
        name if isinstance(name, str) and name else filename,
        filename,
        file_type,
        text,
        digest,
        len(data),
        metadata,
    )
    forced = ctx.forced_extraction.get(filename)
    if forced:
        source.forced_status, source.error_message = forced
    ctx.store.sources[source.id] = source
    ctx.store.counters["source_uploaded"] += 1
    return web.json_response(source_json(ctx, source), status=201)


async def get_source(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    source = _find(ctx.store.sources, request.match_info["source_id"], "Source")
    source.polls += 1
    ctx.store.counters["source_polled"] += 1
    return web.json_response(source_json(ctx, source))


async def list_sources(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    items = [source_json(ctx, s) for s in ctx.store.sources.values()]
    return web.json_response(page(request, "sources", items))


def link_json(link: KbSourceLink, *, fresh: bool = False) -> dict[str, Any]:
    return {
        "id": link.id,
        "knowledge_base_id": link.knowledge_base_id,
        "source_id": link.source_id,
        "index_status": "pending" if fresh else "indexed",
        "created_at": link.created_at,
    }


async def attach_source(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    kb = _find(ctx.store.knowledge_bases, request.match_info["kb_id"], "Knowledge base")
    source_id = text_field(await read_json(request), "source_id", required=True)
    source = _find(ctx.store.sources, source_id, "Source")
    status = extraction_status(ctx, source)
    if status != "extracted":
        raise ApiError(400, f"source {source_id} is not extracted yet (status: {status})")
    link = next(
        (
            link
            for link in ctx.store.kb_sources.values()
            if (link.knowledge_base_id, link.source_id) == (kb.id, source.id)
        ),
        None,
    )
    if link is None:
        link = KbSourceLink(new_id(), kb.id, source.id)
        ctx.store.kb_sources[link.id] = link
    ctx.store.counters["source_attached"] += 1
    return web.json_response(link_json(link, fresh=True), status=201)


async def list_kb_sources(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    kb = _find(ctx.store.knowledge_bases, request.match_info["kb_id"], "Knowledge base")
    links = [link for link in ctx.store.kb_sources.values() if link.knowledge_base_id == kb.id]
    return web.json_response({"sources": [link_json(link) for link in links]})


async def detach_source(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    kb_id, source_id = request.match_info["kb_id"], request.match_info["source_id"]
    for link_id, link in list(ctx.store.kb_sources.items()):
        if (link.knowledge_base_id, link.source_id) == (kb_id, source_id):
            del ctx.store.kb_sources[link_id]
            ctx.store.counters["source_detached"] += 1
            return web.json_response({"success": True})
    raise ApiError(404, f"Source {source_id} is not attached to knowledge base {kb_id}")


# --- agents ----------------------------------------------------------------------------------


def agent_json(agent: Agent) -> dict[str, Any]:
    data = asdict(agent)
    return {**data.pop("extra"), **data}


async def create_agent(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_json(request)
    agent = Agent(
        new_id(),
        text_field(body, "name", required=True),
        text_field(body, "model", default="gpt-5.4-mini"),
        text_field(body, "system_prompt"),
        dict_field(body, "settings"),
        {"tools": body["tools"]} if "tools" in body else {},  # stored, never used (as backend)
    )
    ctx.store.agents[agent.id] = agent
    ctx.store.counters["agent_created"] += 1
    return web.json_response(agent_json(agent), status=201)


async def list_agents(request: web.Request) -> web.Response:
    items = [agent_json(a) for a in request.app[CONTEXT].store.agents.values()]
    return web.json_response(page(request, "agents", items))


async def get_agent(request: web.Request) -> web.Response:
    agents = request.app[CONTEXT].store.agents
    return web.json_response(agent_json(_find(agents, request.match_info["agent_id"], "Agent")))


async def update_agent(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    agent = _find(ctx.store.agents, request.match_info["agent_id"], "Agent")
    body = await read_json(request)
    agent.name = text_field(body, "name", default=agent.name)
    agent.model = text_field(body, "model", default=agent.model)
    agent.system_prompt = text_field(body, "system_prompt", default=agent.system_prompt)
    if "settings" in body:
        agent.settings = dict_field(body, "settings")
    ctx.store.counters["agent_updated"] += 1
    return web.json_response(agent_json(agent))


async def assign_kb(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    agent = _find(ctx.store.agents, request.match_info["agent_id"], "Agent")
    body = await read_json(request)
    kb_id = text_field(body, "knowledge_base_id", required=True)
    _find(ctx.store.knowledge_bases, kb_id, "Knowledge base")
    if any(
        a.agent_id == agent.id and a.knowledge_base_id == kb_id
        for a in ctx.store.agent_kbs.values()
    ):
        raise ApiError(409, f"knowledge base {kb_id} is already assigned to agent {agent.id}")
    link = AgentKb(new_id(), agent.id, kb_id, dict_field(body, "config"))
    ctx.store.agent_kbs[link.id] = link
    ctx.store.counters["agent_kb_assigned"] += 1
    return web.json_response(asdict(link), status=201)


async def list_agent_kbs(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    agent = _find(ctx.store.agents, request.match_info["agent_id"], "Agent")
    links = [asdict(a) for a in ctx.store.agent_kbs.values() if a.agent_id == agent.id]
    return web.json_response({"knowledge_bases": links})


# --- orchestrations and entities -------------------------------------------------------------


async def create_orchestration(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_json(request)
    strategy = text_field(body, "strategy", default="supervisor")
    if strategy not in STRATEGIES:
        raise ApiError(400, f"unknown strategy: {strategy}")
    orch = Orchestration(
        new_id(),
        text_field(body, "name", required=True),
        text_field(body, "description"),
        strategy,
        dict_field(body, "orchestrator_config"),
        dict_field(body, "settings"),
    )
    ctx.store.orchestrations[orch.id] = orch
    ctx.store.counters["orchestration_created"] += 1
    return web.json_response(asdict(orch), status=201)


async def list_orchestrations(request: web.Request) -> web.Response:
    items = [asdict(o) for o in request.app[CONTEXT].store.orchestrations.values()]
    return web.json_response(page(request, "orchestrations", items, default_limit=None))


async def get_orchestration(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch = _find(ctx.store.orchestrations, request.match_info["orch_id"], "Orchestration")
    entities = [asdict(e) for e in ctx.store.entities_of(orch.id)]
    return web.json_response({**asdict(orch), "entities": entities})


async def update_orchestration(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch = _find(ctx.store.orchestrations, request.match_info["orch_id"], "Orchestration")
    body = await read_json(request)
    orch.name = text_field(body, "name", default=orch.name)
    orch.description = text_field(body, "description", default=orch.description)
    if "orchestrator_config" in body:
        orch.orchestrator_config = dict_field(body, "orchestrator_config")
    if "settings" in body:
        orch.settings = dict_field(body, "settings")
    ctx.store.counters["orchestration_updated"] += 1
    return web.json_response(asdict(orch))


def _entity_fields(ctx: Context, body: dict[str, Any], current: Entity | None) -> tuple[str, str]:
    """(agent id, role description) from the backend shape or the older `agent_id`/`role` one."""
    ref = body.get("entity_ref_id", body.get("agent_id"))
    role = body.get("role_description", body.get("role"))
    if current is None and not ref:
        raise ApiError(400, "'entity_ref_id' (or 'agent_id') is required")
    ref = ref if ref is not None else current.entity_ref_id if current else ""
    role = role if role is not None else current.role_description if current else ""
    if not isinstance(ref, str) or not isinstance(role, str):
        raise ApiError(400, "'entity_ref_id' and 'role_description' must be strings")
    if body.get("entity_type", "agent") != "agent":
        raise ApiError(400, f"unsupported entity_type: {body.get('entity_type')}")
    _find(ctx.store.agents, ref, "Agent")
    return ref, role


async def add_entity(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch = _find(ctx.store.orchestrations, request.match_info["orch_id"], "Orchestration")
    ref, role = _entity_fields(ctx, await read_json(request), None)
    entity = Entity(new_id(), orch.id, "agent", ref, role)
    ctx.store.entities[entity.id] = entity
    ctx.store.counters["entity_created"] += 1
    return web.json_response(asdict(entity), status=201)


async def list_entities(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch = _find(ctx.store.orchestrations, request.match_info["orch_id"], "Orchestration")
    return web.json_response({"entities": [asdict(e) for e in ctx.store.entities_of(orch.id)]})


async def update_entity(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch = _find(ctx.store.orchestrations, request.match_info["orch_id"], "Orchestration")
    entity = _find(ctx.store.entities, request.match_info["entity_id"], "Entity")
    if entity.orchestration_id != orch.id:
        raise ApiError(404, f"Entity not found: {entity.id}")
    entity.entity_ref_id, entity.role_description = _entity_fields(
        ctx, await read_json(request), entity
    )
    ctx.store.counters["entity_updated"] += 1
    return web.json_response(asdict(entity))
