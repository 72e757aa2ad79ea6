"""The Powabase stand-in: an aiohttp app on 127.0.0.1 (port 0) speaking the API in
/work/shared/powabase-api.md, with a scripted model, records of every run, and fault injection."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from sandbox.powabase import provisioning as prov
from sandbox.powabase import runs
from sandbox.powabase.context import CONTEXT, Context, SpecialistPlan
from sandbox.powabase.faults import (
    DETAIL_FAULT_KINDS,
    RUN_FAULT_KINDS,
    ApiFault,
    DetailFault,
    DetailFaultKind,
    FaultPlan,
    RunFault,
    RunFaultKind,
)
from sandbox.powabase.replies import ApiError
from sandbox.powabase.seeding import seed_store
from sandbox.powabase.state import RunRecord
from sandbox.serving import LoopbackServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _key_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ApiError and aiohttp's own 404/405 as JSON `{"error": ...}`."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response({"error": exc.reason}, status=exc.status)
        raise


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gateway checks `apikey` (`{"message"}` on failure); backend checks the Bearer token."""
    ctx = request.app[CONTEXT]
    if not _key_matches(request.headers.get("apikey"), ctx.api_key):
        return web.json_response({"message": "Invalid API key"}, status=401)
    auth = request.headers.get("Authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else None
    if not _key_matches(token, ctx.api_key):
        return web.json_response({"error": "Invalid or missing authorization token"}, status=401)
    return await handler(request)


@web.middleware
async def _api_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    fault = request.app[CONTEXT].faults.api_fault_for(request.method, request.path)
    if fault is not None:
        return web.json_response(fault.body or {"error": "injected failure"}, status=fault.status)
    return await handler(request)


def build_app(ctx: Context) -> web.Application:
    """The aiohttp application serving ``ctx``."""
    app = web.Application(middlewares=[_errors, _auth, _api_faults])
    app[CONTEXT] = ctx
    r = app.router
    o = "/api/orchestrations"
    r.add_post(o + "/{orch_id}/run/stream", runs.run_stream)
    r.add_get(o + "/runs/{run_id}", runs.run_detail)
    r.add_get(o + "/{orch_id}/sessions", runs.list_sessions)
    r.add_get(o + "/{orch_id}/sessions/{session_id}/messages", runs.session_messages)
    r.add_get("/api/sessions/{session_id}/messages", runs.session_messages)
    r.add_post("/api/knowledge-bases", prov.create_kb)
    r.add_get("/api/knowledge-bases", prov.list_kbs)
    r.add_get("/api/knowledge-bases/{kb_id}", prov.get_kb)
    r.add_put("/api/knowledge-bases/{kb_id}", prov.update_kb)
    r.add_post("/api/knowledge-bases/{kb_id}/sources", prov.attach_source)
    r.add_get("/api/knowledge-bases/{kb_id}/sources", prov.list_kb_sources)
    r.add_delete("/api/knowledge-bases/{kb_id}/sources/{source_id}", prov.detach_source)
    r.add_post("/api/sources/upload", prov.upload_source)
    r.add_get("/api/sources", prov.list_sources)
    r.add_get("/api/sources/{source_id}", prov.get_source)
    r.add_post("/api/agents", prov.create_agent)
    r.add_get("/api/agents", prov.list_agents)
    r.add_get("/api/agents/{agent_id}", prov.get_agent)
    r.add_put("/api/agents/{agent_id}", prov.update_agent)
    r.add_post("/api/agents/{agent_id}/knowledge-bases", prov.assign_kb)
    r.add_get("/api/agents/{agent_id}/knowledge-bases", prov.list_agent_kbs)
    r.add_post(o, prov.create_orchestration)
    r.add_get(o, prov.list_orchestrations)
    r.add_get(o + "/{orch_id}", prov.get_orchestration)
    r.add_put(o + "/{orch_id}", prov.update_orchestration)
    r.add_post(o + "/{orch_id}/entities", prov.add_entity)
    r.add_get(o + "/{orch_id}/entities", prov.list_entities)
    r.add_put(o + "/{orch_id}/entities/{entity_id}", prov.update_entity)
    return app


class PowabaseStandin(LoopbackServer):
    """A running local Powabase; use as ``async with PowabaseStandin() as pb: ... pb.url``."""

    def __init__(
        self,
        *,
        api_key: str = "pb-standin-key",
        delta_delay: float = 0.0,
        step_delay: float = 0.0,
        extraction_polls: int = 2,
        keepalive_interval: float = 30.0,
    ) -> None:
        self.api_key = api_key
        self._ctx = Context(api_key, delta_delay, extraction_polls, keepalive_interval)
        self._ctx.step_delay = step_delay
        self.url = ""

    @property
    def runs(self) -> list[RunRecord]:
        """One record per `run/stream` request that reached the run handler, oldest first."""
        return self._ctx.store.runs

    @property
    def counters(self) -> dict[str, int]:
        """Successful API writes by kind, e.g. ``counters["kb_created"]`` (missing keys read 0)."""
        return self._ctx.store.counters

    @property
    def faults(self) -> FaultPlan:
        """The fault plan: queued faults, and ``faults.chaos(rate=…, seed=…)`` for random ones."""
        return self._ctx.faults

    @property
    def context(self) -> Context:
        """The full in-memory state, for tests that need to look deeper."""
        return self._ctx

    async def start(self) -> None:
        port = await self.serve(build_app(self._ctx), shutdown_timeout=0.5)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.close_server()

    def seed_from(self, seed_dir: Path) -> str:
        """Provision `<domain>-kb` / `<domain>-agent` per sub-directory of ``seed_dir`` and a
        supervisor orchestration over them, directly in memory; returns the orchestration id."""
        return seed_store(self._ctx.store, Path(seed_dir))

    def inject_run_fault(
        self,
        kind: RunFaultKind,
        *,
        times: int = 1,
        status: int = 500,
        body: str | None = None,
        after_deltas: int = 3,
        delay: float = 1.0,
        retry_after: str | None = None,
        run_status: str = "cancelled",
        frame_chars: int = 2 * 1024 * 1024,
    ) -> None:
        """Make the next ``times`` runs misbehave; the kinds are described in
        sandbox/powabase/faults.py (status, html_status, text_status, early_error, error_event,
        drop, drop_at_start, no_complete, failed, ended, delay, stall, oversize_frame,
        unknown_events, malformed_events)."""
        if kind not in RUN_FAULT_KINDS:
            raise ValueError(f"unknown run fault kind {kind!r}; expected one of {RUN_FAULT_KINDS}")
        self._ctx.faults.run_faults.append(
            RunFault(
                kind,
                times,
                status,
                body,
                after_deltas,
                delay,
                retry_after,
                run_status=run_status,
                frame_chars=frame_chars,
            )
        )

    def ask_specialists(self, agents: Sequence[str], *, times: int = 1, match: str = "") -> None:
        """Make the coordinator delegate to ``agents`` (agent names, in order) in the next
        ``times`` runs whose message contains ``match``: with two or more, both
        `delegate_to_<agent>` calls come first, then each delegation in turn."""
        if not agents or times < 1:
            raise ValueError("ask_specialists needs at least one agent and times >= 1")
        self._ctx.specialist_plans.append(SpecialistPlan(tuple(agents), times, match))

    def inject_detail_fault(
        self, kind: DetailFaultKind, *, times: int = 1, delay: float = 1.0, body: Any = None
    ) -> None:
        """Bend the next ``times`` `GET /api/orchestrations/runs/{run_id}` answers: ``not_found``
        (404), ``slow`` (``delay`` seconds first) or ``odd_shape`` (``body``, or a detail with
        missing fields and wrong types); see sandbox/powabase/faults.py."""
        if kind not in DETAIL_FAULT_KINDS:
            raise ValueError(f"unknown detail fault kind {kind!r}; expected {DETAIL_FAULT_KINDS}")
        self._ctx.faults.detail_faults.append(DetailFault(kind, times, delay, body))

    def inject_api_fault(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 500,
        times: int = 1,
        skip: int = 0,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer ``status`` to ``times`` requests matching method + glob path, after ``skip``."""
        self._ctx.faults.api_faults.append(
            ApiFault(method, path_pattern, status, times, skip, body)
        )

    def force_extraction_status(
        self,
        filename: str,
        status: Literal["attention_required", "failed", "cancelled", "extracted"] | str,
        error_message: str = "",
    ) -> None:
        """Sources uploaded (before or after this call) with this file name end in ``status``."""
        self._ctx.forced_extraction[filename] = (status, error_message)
        for source in self._ctx.store.sources.values():
            if source.filename == filename:
                source.forced_status, source.error_message = status, error_message
