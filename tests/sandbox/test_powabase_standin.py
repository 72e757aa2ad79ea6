"""The Powabase stand-in, exercised over a real socket with httpx as powabot's client would."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sandbox.powabase import PowabaseStandin
from sandbox.powabase.faults import CHAOS_KINDS, ODD_DETAIL, PROXY_RESET_TEXT, FaultPlan

SEED_DIR = Path(__file__).resolve().parents[2] / "seed-content"
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
SUPERVISOR_ORDER = [
    "start",
    "orchestration_started",
    "step_started",
    "tool_call",
    "delegation_started",
    "step_started",
    "tool_call",
    "tool_result",
    "step_completed",
    "step_started",
    "content_delta",
    "step_completed",
    "delegation_completed",
    "tool_result",
    "step_completed",
    "step_started",
    "content_delta",
    "step_completed",
    "orchestration_completed",
    "chunk",
    "complete",
]


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def standin() -> AsyncIterator[PowabaseStandin]:
    async with PowabaseStandin(extraction_polls=2) as pb:
        yield pb


@pytest.fixture
async def client(standin: PowabaseStandin) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"apikey": standin.api_key, "Authorization": f"Bearer {standin.api_key}"}
    async with httpx.AsyncClient(base_url=standin.url, headers=headers, timeout=10) as c:
        yield c


@pytest.fixture
def orch_id(standin: PowabaseStandin) -> str:
    return standin.seed_from(SEED_DIR)


def parse_frames(raw: bytes) -> list[dict[str, Any] | str]:
    """Split a body into frames; data frames become dicts, comment frames stay strings."""
    assert raw.endswith(b"\n\n"), raw[-80:]
    frames: list[dict[str, Any] | str] = []
    for frame in raw[:-2].split(b"\n\n"):
        text = frame.decode("utf-8")
        assert "\n" not in text and "\r" not in text, f"multi-line frame: {text!r}"
        if text.startswith(":"):
            frames.append(text)
        else:
            assert text.startswith("data: "), text
            frames.append(json.loads(text[len("data: ") :]))
    return frames


async def run(
    client: httpx.AsyncClient, orch_id: str, message: str, session_id: str | None = None
) -> tuple[httpx.Response, bytes, list[dict[str, Any]]]:
    body = {"message": message, "session_id": session_id}
    async with client.stream("POST", f"/api/orchestrations/{orch_id}/run/stream", json=body) as r:
        raw = await r.aread()
    events = [f for f in parse_frames(raw) if isinstance(f, dict)] if r.status_code == 200 else []
    return r, raw, events


def names(events: list[dict[str, Any]]) -> list[str]:
    """Event names with runs of content_delta collapsed to one entry."""
    out: list[str] = []
    for event in events:
        if not (event["event"] == "content_delta" and out and out[-1] == "content_delta"):
            out.append(event["event"])
    return out


def final_deltas(events: list[dict[str, Any]]) -> list[str]:
    """The content_delta texts streamed after the last delegation closed (the user's answer)."""
    last = max(
        (i for i, e in enumerate(events) if e["event"] == "delegation_completed"), default=-1
    )
    return [e["delta"] for e in events[last + 1 :] if e["event"] == "content_delta"]


def by_name(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


# --- the stream ------------------------------------------------------------------------------


async def test_every_frame_is_one_data_line_and_a_blank_line(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """Each SSE frame is exactly `data: <json>\\n\\n` with no `event:`/`id:` lines."""
    response, raw, events = await run(client, orch_id, "How do I authenticate against your API?")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"event:" not in raw.replace(b'"event":', b"") and b"\nid:" not in raw
    assert all(isinstance(f, dict) for f in parse_frames(raw))
    assert len(events) > 20


async def test_supervisor_run_emits_events_in_documented_order(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """A delegated run streams start → delegation → specialist → final answer → chunk → complete."""
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    assert names(events) == SUPERVISOR_ORDER
    sequenced = [e for e in events if "seq" in e]
    assert [e["seq"] for e in sequenced] == list(range(1, len(sequenced) + 1))
    for event in sequenced:
        datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    for event in by_name(events, "content_delta"):
        assert set(event) == {"event", "type", "delta"}
    assert all(e["type"] == e["event"] for e in by_name(events, "tool_call"))
    assert "type" not in by_name(events, "delegation_started")[0]


async def test_final_answer_is_streamed_and_repeated_in_chunk_and_complete(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """The final deltas concatenate to chunk.content and complete.content, grounded in the docs."""
    _, _, events = await run(client, orch_id, "What's the refund window for Pro if I pay annually?")
    answer = "".join(final_deltas(events))
    assert len(final_deltas(events)) > 5
    assert answer == by_name(events, "chunk")[0]["content"]
    complete = by_name(events, "complete")[0]
    assert complete["content"] == answer and complete["status"] == "completed"
    assert complete["error"] is None and complete["usage"]["total_tokens"] > 0
    assert "**30 days**" in answer and "refunds-faq.md" in answer and "billing" in answer
    report = "".join(e["delta"] for e in by_name(events, "content_delta")).replace(answer, "")
    assert report and report not in answer
    start = events[0]
    assert (
        re.fullmatch(r"orch_run_[0-9a-f]{12}", start["run_id"])
        and start["run_id"] == complete["run_id"]
    )
    assert re.fullmatch(r"orch_sess_[0-9a-f]{12}", start["session_id"])


@pytest.mark.parametrize(
    ("question", "agent", "source"),
    [
        ("What's the refund window for the Pro plan?", "billing-agent", "refunds-faq.md"),
        ("How do I authenticate against your API?", "technical-agent", "api-setup-guide.md"),
        (
            "What's the difference between Business and Enterprise?",
            "product-agent",
            "feature-matrix.md",
        ),
    ],
)
async def test_questions_are_delegated_to_the_matching_specialist(
    client: httpx.AsyncClient, orch_id: str, question: str, agent: str, source: str
) -> None:
    """The coordinator picks the specialist whose domain fits; that specialist searches its KB."""
    _, _, events = await run(client, orch_id, question)
    assert by_name(events, "delegation_started")[0]["agent"] == agent
    calls = by_name(events, "tool_call")
    assert (
        calls[0]["tool_name"] == f"delegate_to_{agent}"
        and question in calls[0]["arguments"]["task"]
    )
    assert calls[1]["tool_name"] == "knowledge_search" and calls[1]["arguments"] == {
        "query": question
    }
    search = by_name(events, "tool_result")[0]
    assert len(search["result_preview"]) <= 200 and search["result_meta"]["source"] == source
    assert by_name(events, "delegation_completed")[0]["status"] == "completed"


def test_routing_gets_most_of_the_eval_set_right() -> None:
    """The deterministic router sends at least 90% of eval.yaml questions to the expected agent."""
    from sandbox.powabase import model
    from sandbox.powabase.seeding import seed_store
    from sandbox.powabase.state import Store

    store = Store()
    orch = store.orchestrations[seed_store(store, SEED_DIR)]
    questions = yaml.safe_load((SEED_DIR / "eval.yaml").read_text())["questions"]
    hits = sum(
        (a := model.answer(store, orch, q["question"], [])).agent is not None
        and a.agent.name == q["expected"]
        for q in questions
    )
    assert len(questions) >= 30 and hits / len(questions) >= 0.9


# --- sessions and history --------------------------------------------------------------------


async def test_session_continues_and_short_follow_up_uses_history(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """Sending the start event's session_id continues the conversation; history holds both turns."""
    _, _, first = await run(client, orch_id, "How long does a refund take to reach my card?")
    session = first[0]["session_id"]
    _, _, second = await run(client, orch_id, "And SEPA?", session_id=session)
    assert second[0]["session_id"] == session
    assert by_name(second, "delegation_started")[0]["agent"] == "billing-agent"
    assert "3–5 business days" in by_name(second, "complete")[0]["content"]
    history = (
        await client.get(f"/api/orchestrations/{orch_id}/sessions/{session}/messages")
    ).json()
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    assert history["messages"][3]["run_id"] == second[0]["run_id"]
    assert history["messages"][1]["tool_calls"][0]["tool_name"] == "delegate_to_billing-agent"
    listing = (await client.get(f"/api/orchestrations/{orch_id}/sessions")).json()
    assert listing["total"] == 1 and listing["sessions"][0]["run_count"] == 2
    assert [r.session_id_sent for r in standin.runs] == [None, session]


async def test_unknown_session_id_is_adopted(client: httpx.AsyncClient, orch_id: str) -> None:
    """A session id the server never issued becomes a new session with that very id."""
    _, _, events = await run(client, orch_id, "Which payment methods do you accept?", "slack-T1-C1")
    assert events[0]["session_id"] == "slack-T1-C1"
    history = await client.get("/api/sessions/slack-T1-C1/messages")
    assert history.status_code == 200 and len(history.json()["messages"]) == 2


async def test_run_detail_lists_the_child_run(client: httpx.AsyncClient, orch_id: str) -> None:
    """GET /api/orchestrations/runs/{run_id} shows the run and its delegated child run."""
    _, _, events = await run(client, orch_id, "How do I set up SAML single sign-on with Okta?")
    detail = (await client.get(f"/api/orchestrations/runs/{events[0]['run_id']}")).json()
    started = by_name(events, "delegation_started")[0]
    assert detail["status"] == "completed" and len(detail["child_runs"]) == 1
    assert detail["child_runs"][0]["run_id"] == started["child_execution_id"]
    assert (await client.get("/api/orchestrations/runs/orch_run_000000000000")).status_code == 404


async def test_run_records_latency_marks(client: httpx.AsyncClient, orch_id: str) -> None:
    """Each run records when its first final-answer delta and its complete event were written."""
    async with PowabaseStandin(delta_delay=0.01) as slow:
        oid = slow.seed_from(SEED_DIR)
        headers = dict(client.headers)
        async with httpx.AsyncClient(base_url=slow.url, headers=headers) as c:
            _, _, events = await run(c, oid, "What are the API rate limits?")
    record = slow.runs[0]
    assert record.delegated_to == "technical-agent" and record.status == "completed"
    assert record.answer == by_name(events, "complete")[0]["content"]
    assert record.t_first_content_delta is not None and record.t_complete is not None
    assert record.t_complete - record.t_first_content_delta >= 0.01 * (
        len(final_deltas(events)) - 1
    )
    first_final = [t for t, n in record.events if n == "content_delta"][-len(final_deltas(events))]
    assert first_final == record.t_first_content_delta


async def test_bad_run_requests_are_rejected(client: httpx.AsyncClient, orch_id: str) -> None:
    """No message → 400; unknown orchestration → 404; both as JSON errors."""
    missing = await client.post(f"/api/orchestrations/{orch_id}/run/stream", json={})
    unknown = await client.post("/api/orchestrations/nope/run/stream", json={"message": "hi"})
    assert missing.status_code == 400 and "message" in missing.json()["error"]
    assert unknown.status_code == 404 and unknown.json()["error"]


async def test_auth_requires_apikey_and_bearer(standin: PowabaseStandin, orch_id: str) -> None:
    """Missing apikey → gateway 401 {"message"}; wrong bearer → backend 401 {"error"}."""
    async with httpx.AsyncClient(base_url=standin.url) as c:
        no_key = await c.get("/api/agents")
        bad_bearer = await c.get(
            "/api/agents", headers={"apikey": standin.api_key, "Authorization": "Bearer wrong"}
        )
        good = await c.get(
            "/api/agents",
            headers={"apikey": standin.api_key, "Authorization": f"Bearer {standin.api_key}"},
        )
    assert no_key.status_code == 401 and "message" in no_key.json()
    assert bad_bearer.status_code == 401 and "error" in bad_bearer.json()
    assert good.status_code == 200 and good.json()["total"] == 3


async def test_client_disconnect_cancels_the_run(client: httpx.AsyncClient) -> None:
    """Closing the stream mid-answer ends the run server-side as cancelled."""
    async with PowabaseStandin(delta_delay=0.02) as slow:
        oid = slow.seed_from(SEED_DIR)
        async with httpx.AsyncClient(base_url=slow.url, headers=dict(client.headers)) as c:
            body = {"message": "What is the maximum attachment file size?"}
            async with c.stream("POST", f"/api/orchestrations/{oid}/run/stream", json=body) as r:
                async for line in r.aiter_lines():
                    if '"delegation_completed"' in line:
                        break
            await asyncio.wait_for(slow.runs[0].done.wait(), timeout=5)
        assert slow.runs[0].status == "cancelled" and slow.runs[0].t_complete is None


# --- run faults ------------------------------------------------------------------------------


async def test_status_fault_answers_json_error_once(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`status` answers an HTTP error with a JSON body before any stream, for `times` runs."""
    standin.inject_run_fault("status", status=503, body="billing check failed", times=2)
    results = [await run(client, orch_id, "refund window?") for _ in range(3)]
    assert [r.status_code for r, _, _ in results] == [503, 503, 200]
    assert results[0][0].json() == {"error": "billing check failed"}
    assert [r.status for r in standin.runs] == ["http_503", "http_503", "completed"]


async def test_status_fault_can_send_retry_after(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """A `status` fault given ``retry_after`` sends it as the `Retry-After` header."""
    standin.inject_run_fault("status", status=429, retry_after="7")
    response, _, _ = await run(client, orch_id, "refund window?")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"


async def test_malformed_events_fault_mistypes_fields_but_keeps_the_answer(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`malformed_events` sends known events with mistyped fields; the answer text is intact."""
    standin.inject_run_fault("malformed_events")
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    assert by_name(events, "step_started")[1]["step"] == "one"
    assert any(e.get("duration_ms") == "slow" for e in by_name(events, "tool_result"))
    finals = [e for e in events if e["event"] == "content_delta" and isinstance(e.get("seq"), str)]
    assert finals and all(isinstance(e["ts"], float) for e in finals)
    assert "".join(final_deltas(events)) == by_name(events, "chunk")[0]["content"]
    assert standin.runs[-1].status == "completed"


async def test_html_status_fault_answers_an_html_page(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`html_status` answers an HTML error page, as framework aborts do."""
    standin.inject_run_fault("html_status", status=500)
    response, raw, _ = await run(client, orch_id, "refund window?")
    assert response.status_code == 500 and response.headers["content-type"].startswith("text/html")
    assert raw.startswith(b"<!doctype html>")


async def test_error_event_fault_replaces_chunk_and_complete(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`error_event` streams part of the answer, then an `error` event and no chunk/complete."""
    standin.inject_run_fault("error_event", after_deltas=2, body="provider overloaded")
    response, _, events = await run(client, orch_id, "How much does Business cost per seat?")
    assert response.status_code == 200 and events[0]["event"] == "start"
    assert events[-1] == {
        "event": "error",
        "error": "provider overloaded",
        "code": "provider_error",
        "provider": "openai",
    }
    assert len(final_deltas(events)) == 2 and not by_name(events, "complete")


async def test_early_error_fault_comes_before_start(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`early_error` answers HTTP 200 whose only event is `error`, before any `start`."""
    standin.inject_run_fault("early_error", body="Orchestration not found")
    response, _, events = await run(client, orch_id, "refund window?")
    assert response.status_code == 200
    assert [e["event"] for e in events] == ["error"] and events[0][
        "error"
    ] == "Orchestration not found"


async def test_drop_fault_cuts_the_connection_mid_answer(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`drop` aborts the connection after N final deltas; the client sees a broken body."""
    standin.inject_run_fault("drop", after_deltas=3)
    received: list[str] = []
    body = {"message": "What is the refund window for Pro annual?"}
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", f"/api/orchestrations/{orch_id}/run/stream", json=body
        ) as r:
            async for line in r.aiter_lines():
                received.append(line)
    events = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
    assert len(final_deltas(events)) == 3 and not by_name(events, "complete")
    assert standin.runs[0].status == "dropped"


async def test_no_complete_fault_ends_cleanly_without_complete(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`no_complete` closes the body normally after orchestration_completed, without complete."""
    standin.inject_run_fault("no_complete")
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    assert events[-1]["event"] == "orchestration_completed"
    assert not by_name(events, "chunk") and not by_name(events, "complete")


async def test_failed_fault_ends_with_failed_complete(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`failed` ends the run with `complete` status "failed" and an error text."""
    standin.inject_run_fault("failed", body="model requires an API key")
    _, _, events = await run(client, orch_id, "refund window?")
    complete = events[-1]
    assert complete["event"] == "complete" and complete["status"] == "failed"
    assert complete["error"] == "model requires an API key" and not final_deltas(events)


async def test_delay_fault_sends_keepalives_during_silence(client: httpx.AsyncClient) -> None:
    """`delay` holds the first event back; `: keepalive` comments fill the silence."""
    async with PowabaseStandin(keepalive_interval=0.05) as pb:
        oid = pb.seed_from(SEED_DIR)
        pb.inject_run_fault("delay", delay=0.3)
        async with httpx.AsyncClient(base_url=pb.url, headers=dict(client.headers)) as c:
            _, raw, events = await run(c, oid, "refund window?")
    frames = parse_frames(raw)
    assert frames[0] == ": keepalive" and frames.count(": keepalive") >= 3
    first_event = next(i for i, f in enumerate(frames) if isinstance(f, dict))
    assert all(f == ": keepalive" for f in frames[:first_event])
    assert events[-1]["event"] == "complete"


async def test_text_status_fault_answers_a_proxy_style_plain_text_page(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`text_status` answers a plain-text body, as Envoy and load balancers do, with Retry-After."""
    standin.inject_run_fault("text_status", status=503, body=PROXY_RESET_TEXT, retry_after="7")
    response, raw, _ = await run(client, orch_id, "refund window?")
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.headers["content-type"].startswith("text/plain")
    assert raw.decode() == PROXY_RESET_TEXT


@pytest.mark.parametrize("run_status", ["cancelled", "timeout", "paused"])
async def test_ended_fault_completes_with_another_status(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str, run_status: str
) -> None:
    """`ended` streams part of the answer, then `complete` with the given status and no chunk."""
    standin.inject_run_fault("ended", after_deltas=2, run_status=run_status)
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    assert events[-1]["event"] == "complete" and events[-1]["status"] == run_status
    assert len(final_deltas(events)) == 2 and not by_name(events, "chunk")
    assert standin.runs[-1].status == run_status


async def test_stall_fault_sends_not_a_byte_mid_answer(client: httpx.AsyncClient) -> None:
    """`stall` goes fully silent (no keepalives) after N final deltas, then finishes the run."""
    async with PowabaseStandin(keepalive_interval=0.05) as pb:
        oid = pb.seed_from(SEED_DIR)
        pb.inject_run_fault("stall", after_deltas=2, delay=0.4)
        async with httpx.AsyncClient(base_url=pb.url, headers=dict(client.headers)) as c:
            _, _, events = await run(c, oid, "What is the refund window for Pro annual?")
        record = pb.runs[-1]
    assert events[-1]["event"] == "complete" and record.status == "completed"
    times = [t for t, _ in record.events]
    gaps = [(later - earlier, i) for i, (earlier, later) in enumerate(pairwise(times))]
    longest, at = max(gaps)
    assert longest >= 0.35  # a keepalive every 0.05 s would have broken this silence
    before = [name for _, name in record.events[: at + 1] if name == "content_delta"]
    assert record.events[at][1] == "content_delta" and len(before) > 2


async def test_oversize_frame_fault_sends_one_enormous_data_line(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """`oversize_frame` sends one content_delta of N characters mid-answer, then the rest."""
    standin.inject_run_fault("oversize_frame", after_deltas=1, frame_chars=300_000)
    _, raw, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    (huge,) = [e for e in by_name(events, "content_delta") if len(e["delta"]) > 1000]
    assert huge["delta"] == "x" * 300_000
    assert events[-1]["event"] == "complete" and len(raw) > 300_000


def test_chaos_draws_the_same_faults_for_the_same_seed() -> None:
    """Chaos with a seed is reproducible; rate 0 draws nothing and rate 1 draws every time."""

    def draws(rate: float, seed: int) -> list[str | None]:
        plan = FaultPlan()
        plan.chaos(rate=rate, seed=seed)
        return [(f.kind if (f := plan.next_run_fault()) else None) for _ in range(200)]

    first = draws(0.3, seed=1)
    assert first == draws(0.3, seed=1) and first != draws(0.3, seed=2)
    assert 30 <= sum(kind is not None for kind in first) <= 90
    assert {kind for kind in first if kind} == set(CHAOS_KINDS)
    assert draws(0.0, seed=1) == [None] * 200
    assert None not in draws(1.0, seed=1)


async def test_chaos_fails_runs_over_the_socket_and_records_them(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """With chaos on, runs fail at random as drawn; queued faults still come first."""
    standin.faults.chaos(rate=1.0, seed=4, kinds=("status",), statuses=(502,))
    standin.inject_run_fault("status", status=418)
    first, _, _ = await run(client, orch_id, "refund window?")
    second, _, _ = await run(client, orch_id, "refund window?")
    assert (first.status_code, second.status_code) == (418, 502)
    assert [r.fault for r in standin.runs] == ["status", "status"]
    assert standin.faults.chaos_drawn == {"status": 1}
    standin.faults.chaos(rate=0)
    _, _, events = await run(client, orch_id, "refund window?")
    assert events[-1]["event"] == "complete"


def test_unknown_fault_kind_is_refused(standin: PowabaseStandin) -> None:
    """A typo in a fault kind fails loudly instead of silently injecting nothing."""
    with pytest.raises(ValueError, match="explode"):
        standin.inject_run_fault("explode")  # type: ignore[arg-type]


# --- provisioning ----------------------------------------------------------------------------

FACT_DOC = b"# Widgets\n\n## Export limit\n\nThe Zephyr export limit is **42 widgets** per hour.\n"


async def upload(
    client: httpx.AsyncClient, filename: str, content: bytes, metadata: str | None = None
) -> httpx.Response:
    data = {"metadata": metadata} if metadata is not None else {}
    return await client.post(
        "/api/sources/upload", files={"file": (filename, content, "text/markdown")}, data=data
    )


async def test_provisioned_orchestration_answers_from_uploaded_sources(
    client: httpx.AsyncClient, standin: PowabaseStandin
) -> None:
    """The full provisioning order yields an orchestration that answers from the uploaded file."""
    kb = (await client.post("/api/knowledge-bases", json={"name": "widgets-kb"})).json()
    assert kb["indexing_config"]["strategy"] == "chunk_embed"
    source = (await upload(client, "widgets.md", FACT_DOC, '{"sha256": "abc"}')).json()
    assert source["extraction_status"] == "pending"
    early = await client.post(
        f"/api/knowledge-bases/{kb['id']}/sources", json={"source_id": source["id"]}
    )
    assert early.status_code == 400
    polled = [(await client.get(f"/api/sources/{source['id']}")).json() for _ in range(2)]
    assert [p["extraction_status"] for p in polled] == ["extracting", "extracted"]
    assert polled[1]["metadata"] == {"sha256": "abc"}
    attach = await client.post(
        f"/api/knowledge-bases/{kb['id']}/sources", json={"source_id": source["id"]}
    )
    assert attach.status_code == 201 and attach.json()["index_status"] == "pending"
    agent = (
        await client.post("/api/agents", json={"name": "widget-agent", "system_prompt": "x"})
    ).json()
    assign = f"/api/agents/{agent['id']}/knowledge-bases"
    assert (await client.post(assign, json={"knowledge_base_id": kb["id"]})).status_code == 201
    assert (await client.post(assign, json={"knowledge_base_id": kb["id"]})).status_code == 409
    orch = (
        await client.post("/api/orchestrations", json={"name": "t", "strategy": "supervisor"})
    ).json()
    entity = await client.post(
        f"/api/orchestrations/{orch['id']}/entities",
        json={"agent_id": agent["id"], "role": "Widgets."},
    )
    assert entity.status_code == 201 and entity.json()["entity_ref_id"] == agent["id"]
    _, _, events = await run(client, orch["id"], "What is the Zephyr export limit?")
    assert "**42 widgets**" in by_name(events, "complete")[0]["content"]
    assert by_name(events, "delegation_started")[0]["agent"] == "widget-agent"
    expected = {
        "kb_created": 1,
        "source_uploaded": 1,
        "source_attached": 1,
        "agent_created": 1,
        "agent_kb_assigned": 1,
        "orchestration_created": 1,
        "entity_created": 1,
    }
    assert {key: standin.counters[key] for key in expected} == expected


async def test_recipe_tools_field_does_not_wire_a_kb(client: httpx.AsyncClient) -> None:
    """Like the backend, an agent's `tools` list is stored but gives it no KB to search."""
    kb = (await client.post("/api/knowledge-bases", json={"name": "w-kb"})).json()
    agent = (
        await client.post(
            "/api/agents",
            json={
                "name": "w-agent",
                "tools": [{"type": "knowledge_base_search", "knowledge_base_id": kb["id"]}],
            },
        )
    ).json()
    assert agent["tools"][0]["knowledge_base_id"] == kb["id"]
    orch = (await client.post("/api/orchestrations", json={"name": "t"})).json()
    body = {"entity_type": "agent", "entity_ref_id": agent["id"], "role_description": "Widgets."}
    await client.post(f"/api/orchestrations/{orch['id']}/entities", json=body)
    _, _, events = await run(client, orch["id"], "What is the Zephyr export limit?")
    assert "doesn't cover that" in by_name(events, "complete")[0]["content"]


async def test_duplicate_upload_answers_409_with_the_existing_source(
    client: httpx.AsyncClient, standin: PowabaseStandin
) -> None:
    """Uploading identical content again answers 409 duplicate_source naming the first upload."""
    first = (await upload(client, "a.md", FACT_DOC)).json()
    again = await upload(client, "renamed.md", FACT_DOC)
    assert again.status_code == 409 and again.json()["error"] == "duplicate_source"
    assert again.json()["duplicate"]["id"] == first["id"]
    listed = (await client.get("/api/sources")).json()
    assert [s["id"] for s in listed["sources"]] == [first["id"]]
    assert standin.counters["source_uploaded"] == 1


@pytest.mark.parametrize(
    ("filename", "content", "metadata", "needle"),
    [
        ("tool.exe", b"MZ", None, "tool.exe"),
        ("empty.md", b"", None, "empty"),
        ("doc.md", b"# x\n\ny\n", "{not json", "metadata"),
    ],
)
async def test_bad_uploads_are_rejected_with_a_reason(
    client: httpx.AsyncClient, filename: str, content: bytes, metadata: str | None, needle: str
) -> None:
    """Wrong file type, empty file and malformed metadata each answer 400 naming the problem."""
    response = await upload(client, filename, content, metadata)
    assert response.status_code == 400 and needle in response.json()["error"]


async def test_forced_extraction_failure_blocks_attach(
    client: httpx.AsyncClient, standin: PowabaseStandin
) -> None:
    """A source forced to `failed` reports its error_message and cannot be attached."""
    standin.force_extraction_status("broken.md", "failed", "could not parse")
    kb = (await client.post("/api/knowledge-bases", json={"name": "k"})).json()
    source = (await upload(client, "broken.md", b"# a\n\nb\n")).json()
    polled = [(await client.get(f"/api/sources/{source['id']}")).json() for _ in range(2)]
    assert (
        polled[-1]["extraction_status"] == "failed"
        and polled[-1]["error_message"] == "could not parse"
    )
    attach = await client.post(
        f"/api/knowledge-bases/{kb['id']}/sources", json={"source_id": source["id"]}
    )
    assert attach.status_code == 400


async def test_api_fault_skips_then_fails_matching_requests(
    client: httpx.AsyncClient, standin: PowabaseStandin
) -> None:
    """inject_api_fault lets `skip` matching requests through, then fails `times` of them."""
    standin.inject_api_fault("POST", "/api/sources/upload", status=503, skip=1, times=1)
    codes = [
        (await upload(client, f"f{i}.md", f"# {i}\n\nbody {i}\n".encode())).status_code
        for i in range(3)
    ]
    assert codes == [201, 503, 201]
    assert standin.counters["source_uploaded"] == 2


async def test_kb_list_is_paginated_and_names_are_not_unique(client: httpx.AsyncClient) -> None:
    """Same-name KBs all exist; ?q= filters, limit/offset page, and the default page is 50."""
    for i in range(53):
        await client.post("/api/knowledge-bases", json={"name": "dup-kb" if i < 3 else f"kb-{i}"})
    dup = (await client.get("/api/knowledge-bases", params={"q": "dup-kb", "limit": 2})).json()
    rest = (await client.get("/api/knowledge-bases", params={"q": "dup-kb", "offset": 2})).json()
    default = (await client.get("/api/knowledge-bases")).json()
    assert (len(dup["knowledge_bases"]), dup["total"], len(rest["knowledge_bases"])) == (2, 3, 1)
    assert (len(default["knowledge_bases"]), default["total"], default["limit"]) == (50, 53, 50)
    bad = await client.get("/api/knowledge-bases", params={"limit": "many"})
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


async def test_entities_and_agents_can_be_listed_and_updated(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """Agents are found by ?q=, and PUT on an entity changes the role the coordinator routes by."""
    found = (await client.get("/api/agents", params={"q": "billing-agent"})).json()["agents"]
    assert [a["name"] for a in found] == ["billing-agent"]
    entities = (await client.get(f"/api/orchestrations/{orch_id}/entities")).json()["entities"]
    billing = next(e for e in entities if e["entity_ref_id"] == found[0]["id"])
    put = await client.put(
        f"/api/orchestrations/{orch_id}/entities/{billing['id']}",
        json={"role_description": "Money."},
    )
    assert put.status_code == 200 and put.json()["role_description"] == "Money."
    detail = (await client.get(f"/api/orchestrations/{orch_id}")).json()
    assert "Money." in [e["role_description"] for e in detail["entities"]]
    assert standin.counters["entity_updated"] == 1
    assert (await client.get("/api/orchestrations")).json()["total"] == 1


async def test_detached_source_is_no_longer_searched(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """DELETE of a KB source link removes that document from the specialist's answers."""
    kbs = (await client.get("/api/knowledge-bases", params={"q": "billing-kb"})).json()
    kb_id = kbs["knowledge_bases"][0]["id"]
    links = (await client.get(f"/api/knowledge-bases/{kb_id}/sources")).json()["sources"]
    sources = {s["id"]: s["name"] for s in (await client.get("/api/sources")).json()["sources"]}
    refunds = next(link for link in links if sources[link["source_id"]] == "refunds-faq.md")
    deleted = await client.delete(f"/api/knowledge-bases/{kb_id}/sources/{refunds['source_id']}")
    assert deleted.status_code == 200
    _, _, events = await run(client, orch_id, "How long does a refund take to reach my card?")
    assert "refunds-faq.md" not in by_name(events, "complete")[0]["content"]


# --- run detail, search results and several specialists ---------------------------------------

DETAIL_KEYS = {
    "run_id",
    "orchestration_id",
    "status",
    "content",
    "events",
    "usage",
    "model",
    "error",
    "started_at",
    "completed_at",
    "child_runs",
}
CHILD_KEYS = {"run_id", "status", "steps", "content", "events", "tool_calls", "usage", "model"}
TWO_PART = (
    "How much does Business cost per seat? And how do I set up SAML single sign-on with Okta?"
)


async def detail_of(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.get(f"/api/orchestrations/runs/{events[0]['run_id']}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def search_results(child: dict[str, Any]) -> dict[str, Any]:
    """The decoded result of a child run's knowledge_search call (a JSON string on the wire)."""
    (call,) = [c for c in child["tool_calls"] if c["tool_name"] == "knowledge_search"]
    assert isinstance(call["result"], str)
    result: dict[str, Any] = json.loads(call["result"])
    return result


async def test_run_detail_has_the_documented_shape(client: httpx.AsyncClient, orch_id: str) -> None:
    """The detail carries exactly the documented fields, the child run its report and search."""
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    detail = await detail_of(client, events)
    assert set(detail) == DETAIL_KEYS and detail["run_id"] == events[0]["run_id"]
    assert detail["content"] == by_name(events, "complete")[0]["content"]
    assert detail["error"] is None and detail["completed_at"] and detail["model"]
    (child,) = detail["child_runs"]
    assert set(child) == CHILD_KEYS | {"citations"}
    assert child["status"] == "completed" and child["steps"] == 2
    assert child["content"].startswith("Found a relevant passage in refunds-faq.md")
    assert [c["tool_name"] for c in child["tool_calls"]] == ["knowledge_search"]
    assert set(child["tool_calls"][0]) == {
        "step",
        "tool_name",
        "arguments",
        "result",
        "duration_ms",
    }
    assert [e["event"] for e in child["events"]][:2] == ["step_started", "tool_call"]


async def test_search_result_names_the_documents_found(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """The KB search result lists documents by title, file, KB and help-centre URL, best first."""
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    (child,) = (await detail_of(client, events))["child_runs"]
    result = search_results(child)
    assert result["knowledge_bases"] == ["billing-kb"] and 1 <= result["total"] <= 3
    best = result["results"][0]
    assert (best["title"], best["document_name"], best["knowledge_base"]) == (
        "Refunds FAQ",
        "refunds-faq.md",
        "billing-kb",
    )
    assert best["url"] == "https://docs.lumora.example/billing/refunds-faq"
    assert "**30 days**" in best["content"] and best["content"] in events[-1]["content"]
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert child["citations"] == [
        {
            "title": "Refunds FAQ",
            "url": "https://docs.lumora.example/billing/refunds-faq",
            "source_id": best["source_id"],
            "knowledge_base": "billing-kb",
        }
    ]


async def test_unpublished_documents_have_no_url_and_no_citations(
    client: httpx.AsyncClient, orch_id: str
) -> None:
    """Product documents are internal: their search results have url null, the run no citations."""
    _, _, events = await run(
        client, orch_id, "What's the difference between Business and Enterprise?"
    )
    (child,) = (await detail_of(client, events))["child_runs"]
    result = search_results(child)
    assert result["results"][0]["document_name"] == "feature-matrix.md"
    assert all(r["url"] is None for r in result["results"]) and "citations" not in child


async def test_search_that_finds_nothing_returns_no_results(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """A search with no match returns an empty result list that still names the KB searched."""
    standin.ask_specialists(["product-agent"])
    _, _, events = await run(client, orch_id, "Zyxqv wqplm?")
    (child,) = (await detail_of(client, events))["child_runs"]
    result = search_results(child)
    assert result["results"] == [] and result["knowledge_bases"] == ["product-kb"]
    assert "citations" not in child


def delegation_spans(events: list[dict[str, Any]]) -> list[list[str]]:
    """The event names of each delegation, from delegation_started to delegation_completed
    (runs of content_delta collapsed to one)."""
    spans: list[list[dict[str, Any]]] = []
    for event in events:
        if event["event"] == "delegation_started":
            spans.append([])
        if spans and (not spans[-1] or spans[-1][-1]["event"] != "delegation_completed"):
            spans[-1].append(event)
    return [names(span) for span in spans]


async def test_two_specialists_are_called_first_then_consulted_in_turn(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """With two specialists both delegate tool calls come first, then each delegation in turn."""
    standin.ask_specialists(["billing-agent", "technical-agent"], match="refund")
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    coordinator = [e for e in events if e["event"] in ("tool_call", "delegation_started")]
    assert [(e["event"], e.get("tool_name") or e.get("agent")) for e in coordinator[:3]] == [
        ("tool_call", "delegate_to_billing-agent"),
        ("tool_call", "delegate_to_technical-agent"),
        ("delegation_started", "billing-agent"),
    ]
    started = by_name(events, "delegation_started")
    completed = by_name(events, "delegation_completed")
    assert (
        [e["agent"] for e in started]
        == [e["agent"] for e in completed]
        == [
            "billing-agent",
            "technical-agent",
        ]
    )
    assert [e["child_execution_id"] for e in started] == [
        e["child_execution_id"] for e in completed
    ]
    first_end = events.index(completed[0])
    assert events.index(started[1]) > first_end  # one delegation at a time
    assert events[first_end + 1]["tool_name"] == "delegate_to_billing-agent"
    assert delegation_spans(events) == [SUPERVISOR_ORDER[4:13]] * 2  # each as a single one
    answer = by_name(events, "complete")[0]["content"]
    assert answer.startswith("I asked our billing and technical specialists.")
    assert "".join(final_deltas(events)) == answer
    detail = await detail_of(client, events)
    assert [c["run_id"] for c in detail["child_runs"]] == [e["child_execution_id"] for e in started]
    assert [search_results(c)["knowledge_bases"] for c in detail["child_runs"]] == [
        ["billing-kb"],
        ["technical-kb"],
    ]


async def test_specialist_plan_applies_only_to_matching_runs(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """ask_specialists(match=…) leaves other questions routed as usual, and is used up."""
    standin.ask_specialists(["billing-agent", "product-agent"], match="SAML", times=1)
    _, _, other = await run(client, orch_id, "What is the refund window for Pro annual?")
    _, _, planned = await run(client, orch_id, "How do I set up SAML single sign-on with Okta?")
    _, _, again = await run(client, orch_id, "How do I set up SAML single sign-on with Okta?")
    agents = [
        [e["agent"] for e in by_name(ev, "delegation_started")] for ev in (other, planned, again)
    ]
    assert agents == [["billing-agent"], ["billing-agent", "product-agent"], ["technical-agent"]]
    assert [len(r.children) for r in standin.runs] == [1, 2, 1]


async def test_two_part_question_goes_to_two_specialists(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """A message with two questions for different specialists delegates to both, in order."""
    _, _, events = await run(client, orch_id, TWO_PART)
    assert [e["agent"] for e in by_name(events, "delegation_started")] == [
        "billing-agent",
        "technical-agent",
    ]
    calls = by_name(events, "tool_call")
    assert "cost per seat" in calls[0]["arguments"]["task"]
    assert "SAML" in calls[1]["arguments"]["task"] and "cost" not in calls[1]["arguments"]["task"]
    answer = by_name(events, "complete")[0]["content"]
    assert "plans-and-pricing.md" in answer and "sso-setup.md" in answer
    assert standin.runs[0].delegated_to == "billing-agent"


async def test_run_detail_faults(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """Detail faults answer 404, an odd-shaped body (default or given), then the real detail."""
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    path = f"/api/orchestrations/runs/{events[0]['run_id']}"
    standin.inject_detail_fault("not_found")
    standin.inject_detail_fault("odd_shape")
    standin.inject_detail_fault("odd_shape", body=["not", "an", "object"])
    gone, odd, given, real = [await client.get(path) for _ in range(4)]
    assert gone.status_code == 404 and gone.json() == {"error": "Run not found"}
    assert odd.status_code == 200 and odd.json() == ODD_DETAIL
    assert given.json() == ["not", "an", "object"]
    assert real.json()["run_id"] == events[0]["run_id"]
    with pytest.raises(ValueError, match="unknown detail fault"):
        standin.inject_detail_fault("sideways")  # type: ignore[arg-type]


async def test_slow_run_detail_fault_delays_the_answer(
    client: httpx.AsyncClient, standin: PowabaseStandin, orch_id: str
) -> None:
    """A `slow` detail fault holds the answer back for its delay, once."""
    _, _, events = await run(client, orch_id, "What is the refund window for Pro annual?")
    path = f"/api/orchestrations/runs/{events[0]['run_id']}"
    standin.inject_detail_fault("slow", delay=0.3)
    with pytest.raises(httpx.ReadTimeout):
        await client.get(path, timeout=0.1)
    assert (await client.get(path, timeout=5)).status_code == 200
