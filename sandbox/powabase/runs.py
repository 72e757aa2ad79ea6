"""`POST /api/orchestrations/{id}/run/stream` and the history endpoints built on its records.

A specialist's knowledge search (tool ``knowledge_search``, arguments ``{"query"}``) returns, in
the run detail's ``child_runs[].tool_calls[].result``, a JSON **string** (what the engine hands
the model)::

    {"query": "...", "knowledge_bases": ["billing-kb"], "total": 2,
     "results": [{"title": "Refunds FAQ", "document_name": "refunds-faq.md",
                  "source_id": "<uuid>", "knowledge_base": "billing-kb",
                  "knowledge_base_id": "<uuid>", "url": "https://…" | null,
                  "section": "<heading>", "content": "<passage>", "score": 7.12}]}

at most `model.SEARCH_RESULTS` results, best first. A child run whose best result has a URL also
carries ``citations: [{"title", "url", "source_id", "knowledge_base"}]`` (the document its report
quotes). The stream's `tool_result` keeps its short preview (the best passage, ≤ 200 characters).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

from sandbox.powabase import model
from sandbox.powabase.context import CONTEXT, Context
from sandbox.powabase.faults import ODD_DETAIL, STATUS_KINDS, RunFault
from sandbox.powabase.replies import ApiError, read_json
from sandbox.powabase.sse import EventWriter
from sandbox.powabase.state import (
    ChildRun,
    Orchestration,
    RunRecord,
    Session,
    now_iso,
    short_hex,
)

HTML_ERROR = (
    "<!doctype html>\n<html lang=en>\n<title>{status} Internal Server Error</title>\n"
    "<h1>Internal Server Error</h1>\n<p>{text}</p>\n"
)
WORDS_PER_DELTA = 3


def split_deltas(text: str, words: int = WORDS_PER_DELTA) -> list[str]:
    """Cut ``text`` into pieces of a few words whose concatenation is exactly ``text``."""
    tokens = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]


class _Dropped(Exception):
    """The scripted run aborted the connection on purpose (fault `drop`)."""


async def run_stream(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    body = await read_json(request)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise ApiError(400, "'message' is required")
    session_id = body.get("session_id")
    if session_id is not None and (not isinstance(session_id, str) or not session_id):
        raise ApiError(400, "'session_id' must be a non-empty string or null")
    orchestration = ctx.store.orchestrations.get(request.match_info["orch_id"])
    if orchestration is None:
        raise ApiError(404, "Orchestration not found")
    record = RunRecord(orchestration.id, message, session_id)
    ctx.store.runs.append(record)
    ctx.store.counters["run_started"] += 1
    fault = ctx.faults.next_run_fault()
    record.fault = fault.kind if fault else None
    if fault and fault.kind in STATUS_KINDS:
        record.status = f"http_{fault.status}"
        record.done.set()
        text = fault.body or "injected failure"
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.kind == "html_status":
            html = HTML_ERROR.format(status=fault.status, text=text)
            return web.Response(
                status=fault.status, text=html, content_type="text/html", headers=headers
            )
        if fault.kind == "text_status":
            return web.Response(status=fault.status, text=text, headers=headers)
        return web.json_response({"error": text}, status=fault.status, headers=headers)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if fault and fault.kind == "drop_at_start":  # the run was accepted, then the line went
        record.status = "dropped"
        record.done.set()
        if request.transport is not None:
            request.transport.abort()
        return response
    try:
        async with EventWriter(response, record, ctx.keepalive_interval) as writer:
            await _play(writer, ctx, record, orchestration, fault)
        await response.write_eof()
    except _Dropped:
        record.status = "dropped"
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:  # the client went away: the run is cancelled, nothing to answer
        if record.t_complete is None:  # a client closing right after `complete` got it all
            record.status = "cancelled"
    except asyncio.CancelledError:
        if record.t_complete is None:
            record.status = "cancelled"
        raise
    finally:
        record.done.set()
    return response


def _session(ctx: Context, orchestration: Orchestration, requested: str | None) -> Session:
    """The session named by the client (adopted if unknown) or a new one."""
    session_id = requested or f"orch_sess_{short_hex()}"
    session = ctx.store.sessions.get(session_id)
    if session is None:
        session = Session(session_id, orchestration.id)
        ctx.store.sessions[session_id] = session
    return session


async def _play(
    w: EventWriter, ctx: Context, record: RunRecord, orch: Orchestration, fault: RunFault | None
) -> None:
    """Write the scripted supervisor run, bending it as ``fault`` asks."""
    kind = fault.kind if fault else None
    if fault and kind == "delay":
        await asyncio.sleep(fault.delay)
    if fault and kind == "early_error":
        record.status = "error"
        await w.send("error", error=fault.body or "Orchestration not found", code="not_found")
        return
    session = _session(ctx, orch, record.session_id_sent)
    history = list(session.messages)
    session.messages.append({"role": "user", "content": record.message})
    session.last_activity_at = now_iso()
    record.session_id, record.run_id = session.id, f"orch_run_{short_hex()}"
    session.run_ids.append(record.run_id)
    reasoning = bool(orch.orchestrator_config.get("reasoning_effort"))
    await w.send(
        "start", run_id=record.run_id, session_id=session.id, reasoning_requested=reasoning
    )
    await w.send("orchestration_started", strategy=orch.strategy, name=orch.name)
    if fault and kind == "unknown_events":
        # Event types a newer engine emits; clients must tolerate them.
        await w.send("hook_result", hook="pre_run", result={"ok": True})
        await w.send("model_fallback", from_model="gpt-5.4-mini", to_model="gpt-5.4-nano")
        await w.send("compaction", tokens_before=1200, tokens_after=600)
    await w.send("step_started", step=1, is_last_step=False)
    if fault and kind == "malformed_events":
        # Known events whose fields have the wrong type (a newer or buggier engine).
        await w.send("step_started", step="one", is_last_step="maybe")
        await w.send("tool_result", step=1, tool_name="probe", call_id=7, duration_ms="slow")
    ans = model.answer(
        ctx.store, orch, record.message, history, specialists=ctx.next_specialists(record.message)
    )
    tool_calls: list[dict[str, Any]] = []
    if reasoning:
        names = " and ".join(p.agent.name for p in ans.specialists if p.agent is not None)
        thought = f"Route to {names}." if names else "No specialist to route to."
        await w.send("reasoning", step=1, source="thinking", content=thought)
    steps = 1
    if ans.agent is not None:
        steps = 2
        tool_calls = await _delegate_all(w, ctx, record, ans)
        await w.send("step_started", step=2, is_last_step=True)
    record.usage = model.usage_for(record.message, ans.report, ans.final)
    if fault and kind == "failed":
        record.status = "failed"
        error = fault.body or "The model provider returned an error"
        record.error = error
        await w.send("orchestration_completed", status="failed", steps=steps, usage=record.usage)
        await w.send(
            "complete",
            run_id=record.run_id,
            session_id=session.id,
            content="",
            status="failed",
            steps=steps,
            usage=record.usage,
            error=error,
        )
        return
    cut = fault.after_deltas if fault and kind in ("drop", "error_event", "ended") else None
    bend = fault.after_deltas if fault and kind in ("stall", "oversize_frame") else None
    for index, piece in enumerate(split_deltas(ans.final)):
        if index == cut:
            break
        if fault and index == bend:
            await _bend(w, fault)
        if fault and kind == "unknown_events" and index == 1:
            await w.send("step_reset", step=2, reason="retry")
        if fault and kind == "malformed_events":
            sent = await w.send("content_delta", delta=piece, seq=str(index), ts=time.time())
        else:
            sent = await w.send("content_delta", delta=piece)
        if record.t_first_content_delta is None:
            record.t_first_content_delta = sent
        if ctx.delta_delay > 0:
            await asyncio.sleep(ctx.delta_delay)
    if fault and kind == "drop":
        raise _Dropped
    if fault and kind == "error_event":
        record.status = "error"
        error = fault.body or "Upstream model error: the provider closed the connection"
        record.error = error
        await w.send("error", error=error, code="provider_error", provider="openai")
        return
    if fault and kind == "ended":
        record.status = fault.run_status
        status = fault.run_status
        await w.send("orchestration_completed", status=status, steps=steps, usage=record.usage)
        await w.send(
            "complete",
            run_id=record.run_id,
            session_id=session.id,
            content="",
            status=status,
            steps=steps,
            usage=record.usage,
            error=fault.body,
        )
        return
    await w.send("step_completed", step=steps, finish_reason="stop", has_tool_calls=False)
    await w.send("orchestration_completed", status="completed", steps=steps, usage=record.usage)
    if fault and kind == "no_complete":
        record.status = "no_complete"
        return
    record.answer = ans.final
    events = [p for p in record.event_payloads]
    session.messages.append(
        {
            "role": "assistant",
            "content": ans.final,
            "run_id": record.run_id,
            "events": events,
            "tool_calls": tool_calls,
        }
    )
    await w.send("chunk", content=ans.final)
    record.t_complete = await w.send(
        "complete",
        run_id=record.run_id,
        session_id=session.id,
        content=ans.final,
        status="completed",
        steps=steps,
        usage=record.usage,
        error=None,
    )
    record.status = "completed"
    record.completed_at = now_iso()


async def _bend(w: EventWriter, fault: RunFault) -> None:
    """Mid-answer misbehaviour: a silent stall, or one enormous frame."""
    if fault.kind == "stall":
        await w.silence(fault.delay)
    elif fault.kind == "oversize_frame":
        await w.send_oversize("content_delta", "delta", fault.frame_chars)


async def _think(ctx: Context) -> None:
    """Model time between orchestration steps (0 unless the stand-in was given a step_delay)."""
    if ctx.step_delay > 0:
        await asyncio.sleep(ctx.step_delay)


async def _delegate_all(
    w: EventWriter, ctx: Context, record: RunRecord, ans: model.Answer
) -> list[dict[str, Any]]:
    """The coordinator's step 1: every `delegate_to_<agent>` call first, then each delegation
    in turn; returns the tool calls (each delegation, then its specialist's search)."""
    parts = ans.specialists
    first = parts[0]
    assert first.agent is not None
    record.delegated_to, record.task, record.report = first.agent.name, first.task, first.report
    calls = []
    for part in parts:
        assert part.agent is not None
        call_id = f"call_{short_hex()}"
        tool = f"delegate_to_{part.agent.name}"
        calls.append((part, tool, call_id))
        await w.send(
            "tool_call", step=1, tool_name=tool, arguments={"task": part.task}, call_id=call_id
        )
    tool_calls: list[dict[str, Any]] = []
    for part, tool, call_id in calls:
        tool_calls += await _consult(w, ctx, record, part, tool, call_id)
    record.child_execution_id = record.children[0].run_id
    await w.send("step_completed", step=1, finish_reason="tool_calls", has_tool_calls=True)
    return tool_calls


async def _consult(
    w: EventWriter, ctx: Context, record: RunRecord, part: model.Answer, tool: str, call_id: str
) -> list[dict[str, Any]]:
    """One delegation: the specialist's KB search and report, then the delegate tool's result."""
    assert part.agent is not None
    child = ChildRun(f"exec_{short_hex()}", part.agent.name, part.task, part.report)
    child.model = part.agent.model
    record.children.append(child)
    started = time.monotonic()
    await w.send(
        "delegation_started",
        agent=part.agent.name,
        task=part.task,
        child_execution_id=child.run_id,
    )
    first_event = len(record.event_payloads)
    await _think(ctx)  # the specialist reads its task
    await w.send("step_started", step=1, is_last_step=False)
    search_id = f"call_{short_hex()}"
    arguments = {"query": part.query}
    await w.send(
        "tool_call", step=1, tool_name="knowledge_search", arguments=arguments, call_id=search_id
    )
    await _think(ctx)  # the knowledge-base search runs
    found = part.passage.body if part.passage else "No results."
    meta: dict[str, Any] = {
        "knowledge_bases": list(part.kb_names),
        "results": 1 if part.passage else 0,
    }
    if part.passage:
        meta["source"] = part.passage.source_name
    await w.send(
        "tool_result",
        step=1,
        tool_name="knowledge_search",
        call_id=search_id,
        result_preview=found[:200],
        result_meta=meta,
        duration_ms=12,
    )
    await w.send("step_completed", step=1, finish_reason="tool_calls", has_tool_calls=True)
    await w.send("step_started", step=2, is_last_step=True)
    for piece in split_deltas(part.report):
        await w.send("content_delta", delta=piece)
    await w.send("step_completed", step=2, finish_reason="stop", has_tool_calls=False)
    child.events = record.event_payloads[first_event:]
    child.usage = model.usage_for(part.task, found, part.report)
    child.status, child.steps = "completed", 2
    child.tool_calls = [
        {
            "step": 1,
            "tool_name": "knowledge_search",
            "arguments": arguments,
            "result": search_result(part),
            "duration_ms": 12,
        }
    ]
    child.citations = citations(part)
    await w.send(
        "delegation_completed",
        agent=part.agent.name,
        child_execution_id=child.run_id,
        status="completed",
        steps=2,
        usage=child.usage,
    )
    await _think(ctx)  # the coordinator reads the report
    duration = int((time.monotonic() - started) * 1000)
    await w.send(
        "tool_result",
        step=1,
        tool_name=tool,
        call_id=call_id,
        result_preview=part.report[:200],
        result_meta={"agent": part.agent.name, "status": "completed"},
        duration_ms=duration,
    )
    return [
        {
            "step": 1,
            "tool_name": tool,
            "arguments": {"task": part.task},
            "result": part.report,
            "duration_ms": duration,
        },
        {
            "step": 1,
            "tool_name": "knowledge_search",
            "arguments": arguments,
            "result": found,
            "duration_ms": 12,
        },
    ]


def search_result(part: model.Answer) -> str:
    """A knowledge search's full result, as the JSON text the engine gives the model (see the
    module docstring)."""
    results = [
        {
            "title": model.document_title(hit.source),
            "document_name": hit.source.filename or hit.source.name,
            "source_id": hit.source.id,
            "knowledge_base": hit.kb.name,
            "knowledge_base_id": hit.kb.id,
            "url": model.document_url(hit.source),
            "section": hit.passage.heading,
            "content": hit.passage.body,
            "score": round(hit.score, 4),
        }
        for hit in part.hits
    ]
    body = {
        "query": part.query,
        "knowledge_bases": list(part.kb_names),
        "results": results,
        "total": len(results),
    }
    return json.dumps(body, ensure_ascii=False)


def citations(part: model.Answer) -> list[dict[str, Any]]:
    """The document a specialist's report quotes, when it has a URL (else no citations)."""
    if not part.hits or model.document_url(part.hits[0].source) is None:
        return []
    hit = part.hits[0]
    return [
        {
            "title": model.document_title(hit.source),
            "url": model.document_url(hit.source),
            "source_id": hit.source.id,
            "knowledge_base": hit.kb.name,
        }
    ]


def _session_or_404(ctx: Context, session_id: str, orch_id: str | None) -> Session:
    session = ctx.store.sessions.get(session_id)
    if session is None or (orch_id is not None and session.orchestration_id != orch_id):
        raise ApiError(404, "Session not found")
    return session


def _messages_body(session: Session) -> dict[str, Any]:
    assistant = [m for m in session.messages if m["role"] == "assistant"]
    return {
        "session_id": session.id,
        "messages": session.messages,
        "events": [e for m in assistant for e in m.get("events", [])],
        "tool_calls": [t for m in assistant for t in m.get("tool_calls", [])],
    }


async def session_messages(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch_id = request.match_info.get("orch_id")
    session = _session_or_404(ctx, request.match_info["session_id"], orch_id)
    return web.json_response(_messages_body(session))


async def list_sessions(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    orch_id = request.match_info["orch_id"]
    if orch_id not in ctx.store.orchestrations:
        raise ApiError(404, "Orchestration not found")
    sessions = [s for s in ctx.store.sessions.values() if s.orchestration_id == orch_id]
    rows = [
        {
            "session_id": s.id,
            "run_count": len(s.run_ids),
            "first_message": next((m["content"] for m in s.messages if m["role"] == "user"), ""),
            "last_activity_at": s.last_activity_at,
            "created_at": s.created_at,
        }
        for s in sessions
    ]
    return web.json_response({"sessions": rows, "total": len(rows)})


async def run_detail(request: web.Request) -> web.Response:
    """The documented run detail (../shared/powabase-api.md, History), bent by detail faults."""
    ctx = request.app[CONTEXT]
    fault = ctx.faults.next_detail_fault()
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(fault.delay)
    run = ctx.store.run_by_id(request.match_info["run_id"])
    if run is None or (fault is not None and fault.kind == "not_found"):
        raise ApiError(404, "Run not found")
    if fault is not None and fault.kind == "odd_shape":
        return web.json_response(ODD_DETAIL if fault.body is None else fault.body)
    orch = ctx.store.orchestrations.get(run.orchestration_id)
    coordinator_model = orch.orchestrator_config.get("model") if orch else None
    children = []
    for child in run.children:
        entry: dict[str, Any] = {
            "run_id": child.run_id,
            "status": child.status,
            "steps": child.steps,
            "content": child.report,
            "events": child.events,
            "tool_calls": child.tool_calls,
            "usage": child.usage,
            "model": child.model,
        }
        if child.citations:
            entry["citations"] = child.citations
        children.append(entry)
    return web.json_response(
        {
            "run_id": run.run_id,
            "orchestration_id": run.orchestration_id,
            "status": run.status,
            "content": run.answer,
            "events": run.event_payloads,
            "usage": run.usage,
            "model": coordinator_model or "gpt-5.4-mini",
            "error": run.error,
            "started_at": run.created_at,
            "completed_at": run.completed_at,
            "child_runs": children,
        }
    )
