"""The routing smoke check: eval file loading and reading delegations off the run stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.errors import ProvisioningError
from provisioning.spec import REPO_ROOT
from provisioning.verify import EvalItem, ask, load_eval, pick_questions

ITEM = EvalItem(question="What's the refund window?", expected="billing-agent")


def sse_client(chunks: list[bytes], status: int = 200) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/orchestrations/orch-1/run/stream"

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body())

    return httpx.AsyncClient(base_url="http://pb.test", transport=httpx.MockTransport(handler))


async def test_delegations_are_read_from_split_frames() -> None:
    """Frames split mid-line, CRLF, comments, event: lines and unknown events are all tolerated."""
    chunks = [
        b'data: {"event": "start", "run_id": "r", "session_id": "s"}\n\n: keepalive\n\n',
        b'data: {"event": "delegation_sta',
        b'rted", "agent": "billing-agent", "task": "t"}\r\n\r\n',
        b'event: mystery\r\ndata: {"event": "hook_result"}\n\n',
        b'data: {"event": "content_delta", "delta": "caf\xc3',
        b'\xa9"}\n\ndata: {"event": "complete", "status": "completed", "content": "x"}\n\n',
    ]
    async with sse_client(chunks) as client:
        routing = await ask(client, "orch-1", ITEM)
    assert routing.actual == ("billing-agent",) and routing.correct


async def test_fan_out_or_wrong_specialist_is_a_miss() -> None:
    """Routing is correct only when the expected specialist alone was asked."""
    chunks = [
        b'data: {"event": "delegation_started", "agent": "billing-agent"}\n\n',
        b'data: {"event": "delegation_started", "agent": "product-agent"}\n\n',
        b'data: {"event": "complete", "status": "completed"}\n\n',
    ]
    async with sse_client(chunks) as client:
        routing = await ask(client, "orch-1", ITEM)
    assert routing.actual == ("billing-agent", "product-agent") and not routing.correct


async def test_error_event_marks_the_question_failed() -> None:
    """An `error` event is recorded on the routing and counts as a miss."""
    chunks = [b'data: {"event": "error", "error": "model unavailable"}\n\n']
    async with sse_client(chunks) as client:
        routing = await ask(client, "orch-1", ITEM)
    assert routing.error == "model unavailable" and not routing.correct


async def test_http_error_before_stream_names_the_call() -> None:
    """A non-2xx answer to the run request is a ProvisioningError with status and body."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "Orchestration not found"})

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(base_url="http://pb.test", transport=transport) as client:
        with pytest.raises(ProvisioningError, match=r"HTTP 404: .*Orchestration not found"):
            await ask(client, "orch-1", ITEM)


async def test_broken_stream_keeps_the_cause() -> None:
    """A transport failure mid-stream is translated with the httpx error as __cause__."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'data: {"event": "start"}\n\n'
        raise httpx.ReadTimeout("silence")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(base_url="http://pb.test", transport=transport) as client:
        with pytest.raises(ProvisioningError, match="stream failed: ReadTimeout") as info:
            await ask(client, "orch-1", ITEM)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_repo_eval_file_has_one_question_per_domain_by_default() -> None:
    """The checked-in eval file loads; --verify picks the first question of each specialist."""
    items = load_eval(REPO_ROOT / "seed-content" / "eval.yaml")
    picked = pick_questions(items, every=False)
    assert [i.expected for i in picked] == ["billing-agent", "technical-agent", "product-agent"]
    assert pick_questions(items, every=True) == items


def test_bad_eval_file_names_file_and_item(tmp_path: Path) -> None:
    """An eval item missing `expected` is reported with the file and item index."""
    path = tmp_path / "eval.yaml"
    path.write_text("questions:\n  - {question: hi, expected: a}\n  - {question: hello}\n")
    with pytest.raises(
        ProvisioningError, match=rf"{path}: questions\[1\]\.expected: Field required"
    ):
        load_eval(path)
