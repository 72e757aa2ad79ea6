"""The Powabase client survives odd frames and retries runs that failed before their first event,
over real sockets against the stand-in."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from bot.errors import (
    UpstreamConnectError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamStreamError,
)
from bot.powabase.client import PowabaseClient, make_http_client
from bot.powabase.events import (
    CompleteEvent,
    ContentDeltaEvent,
    DelegationCompletedEvent,
    StartEvent,
    StreamEvent,
    UnknownEvent,
    parse_event,
)
from bot.retry import parse_retry_after, retry_delay

QUESTION = "What is the refund window for Pro annual?"


@pytest.fixture
async def http(powabase: Any) -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(powabase.url, powabase.api_key, idle_timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


def client_for(http: httpx.AsyncClient, powabase: Any, **kwargs: Any) -> PowabaseClient:
    """A client with a tiny backoff so retries cost milliseconds."""
    return PowabaseClient(http, powabase.orchestration_id, **{"backoff": 0.01, **kwargs})


async def collect(client: PowabaseClient, message: str = QUESTION) -> list[StreamEvent]:
    return [event async for event in client.stream_run(message)]


def final_answer(events: list[StreamEvent]) -> str:
    """The text streamed after the last delegation closed: what the user watches appear."""
    last = max((i for i, e in enumerate(events) if isinstance(e, DelegationCompletedEvent)))
    return "".join(e.delta for e in events[last + 1 :] if isinstance(e, ContentDeltaEvent))


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 with nobody listening: every connect is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- lenient events ----------------------------------------------------------------------------


async def test_malformed_known_events_do_not_break_the_stream(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """Known events with mistyped fields (string seq, float ts, bad step) still let the answer
    stream to the end."""
    powabase.inject_run_fault("malformed_events")
    events = await collect(client_for(http, powabase))
    record = powabase.runs[-1]
    assert isinstance(events[-1], CompleteEvent) and events[-1].content == record.answer
    assert final_answer(events) == record.answer
    odd = [e for e in events if isinstance(e, UnknownEvent)]
    assert {e.event for e in odd} == {"step_started", "tool_result"}
    assert all('"slow"' in e.raw or '"one"' in e.raw for e in odd)
    deltas = [e for e in events if isinstance(e, ContentDeltaEvent) and isinstance(e.seq, str)]
    assert deltas and all(isinstance(e.ts, float) for e in deltas)


def test_numbers_where_text_is_expected_are_read_as_text() -> None:
    """A content_delta whose delta is a number keeps its text instead of being dropped."""
    event = parse_event(None, '{"event": "content_delta", "delta": 42, "seq": "9"}')
    assert isinstance(event, ContentDeltaEvent) and event.delta == "42" and event.seq == "9"


def test_unusable_fields_become_an_unknown_event_with_the_raw_frame() -> None:
    """A delta that is an object, or a seq that is a list, yields UnknownEvent, not an error."""
    raw = '{"event": "content_delta", "delta": {"text": "hi"}, "seq": [1]}'
    event = parse_event(None, raw)
    assert isinstance(event, UnknownEvent)
    assert event.event == "content_delta" and event.raw == raw and event.seq is None


def test_malformed_complete_still_ends_the_run_with_its_content() -> None:
    """A `complete` with a mistyped field keeps its type and content, so the answer finishes."""
    event = parse_event(None, '{"event": "complete", "content": "Done.", "steps": "two"}')
    assert isinstance(event, CompleteEvent)
    assert event.content == "Done." and event.steps is None and event.status == "completed"


# --- retries before the first event --------------------------------------------------------------


async def test_503_once_then_success_answers_after_one_retry(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """A 503 before the stream starts is retried once and the full answer arrives, once."""
    powabase.inject_run_fault("status", status=503, body="busy")
    events = await collect(client_for(http, powabase))
    assert [r.status for r in powabase.runs] == ["http_503", "completed"]
    assert sum(isinstance(e, StartEvent) for e in events) == 1
    assert isinstance(events[-1], CompleteEvent)
    assert events[-1].content == powabase.runs[-1].answer


@pytest.mark.parametrize("status", [429, 502])
async def test_other_proxy_statuses_are_retried(
    powabase: Any, http: httpx.AsyncClient, status: int
) -> None:
    """429 and 502 (the request never got through) are retried like 503."""
    powabase.inject_run_fault("html_status", status=status)
    events = await collect(client_for(http, powabase))
    assert isinstance(events[-1], CompleteEvent)
    assert [r.status for r in powabase.runs] == [f"http_{status}", "completed"]


@pytest.mark.parametrize("status", [500, 504])
async def test_500_and_504_are_not_retried(
    powabase: Any, http: httpx.AsyncClient, status: int
) -> None:
    """A 500, or a 504 (the proxy forwarded the question and gave up waiting: the run may exist),
    raises UpstreamStatusError at once, with a single request upstream."""
    powabase.inject_run_fault("status", status=status, times=3)
    with pytest.raises(UpstreamStatusError) as info:
        await collect(client_for(http, powabase))
    assert info.value.status == status
    assert len(powabase.runs) == 1


async def test_503_forever_gives_up_after_the_configured_attempts(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """A backend that keeps answering 503 gets exactly `attempts` requests, then a typed error."""
    powabase.inject_run_fault("status", status=503, body="still busy", times=10)
    with pytest.raises(UpstreamStatusError) as info:
        await collect(client_for(http, powabase, attempts=4))
    assert info.value.status == 503 and "still busy" in info.value.body_excerpt
    assert len(powabase.runs) == 4


async def test_retry_after_header_is_honoured(powabase: Any, http: httpx.AsyncClient) -> None:
    """`Retry-After: 0` on a 429 overrides a long backoff, so the retry comes at once."""
    powabase.inject_run_fault("status", status=429, retry_after="0")
    client = client_for(http, powabase, backoff=60.0, max_delay=60.0)
    async with asyncio.timeout(10):
        events = await collect(client)
    assert isinstance(events[-1], CompleteEvent) and len(powabase.runs) == 2


async def test_connection_refused_gives_up_after_retries(refusing_port: int) -> None:
    """A refused connection is tried `attempts` times, then raised as UpstreamConnectError."""
    tried: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        tried.append(request)

    http = make_http_client(f"http://127.0.0.1:{refusing_port}", "k")
    http.event_hooks["request"].append(count)
    client = PowabaseClient(http, "orch", attempts=3, backoff=0.01)
    try:
        with pytest.raises(UpstreamConnectError) as info:
            await collect(client)
    finally:
        await http.aclose()
    assert len(tried) == 3
    assert "after 3 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_connection_refused_once_then_served(powabase: Any, refusing_port: int) -> None:
    """A refused first connection is retried, and the retry's answer is the one delivered."""
    target = httpx.URL(powabase.url)
    calls = 0

    class FlakyTransport(httpx.AsyncHTTPTransport):
        """The real transport, whose first request goes to a port that refuses connections."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            port = refusing_port if calls == 1 else target.port
            request.url = request.url.copy_with(port=port)
            return await super().handle_async_request(request)

    http = make_http_client(powabase.url, powabase.api_key, transport=FlakyTransport())
    try:
        events = await collect(PowabaseClient(http, powabase.orchestration_id, backoff=0.01))
    finally:
        await http.aclose()
    assert calls == 2 and len(powabase.runs) == 1
    assert isinstance(events[-1], CompleteEvent)


# --- never once Powabase accepted the run -----------------------------------------------------


async def test_stream_broken_after_events_is_not_retried(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """A connection dropped mid-answer raises, without a second run that would repeat the answer."""
    powabase.inject_run_fault("drop", after_deltas=2)
    seen: list[StreamEvent] = []
    with pytest.raises(UpstreamStreamError):
        async for event in client_for(http, powabase).stream_run(QUESTION):
            seen.append(event)
    assert any(isinstance(e, StartEvent) for e in seen)
    assert len(powabase.runs) == 1


async def test_stream_cut_after_acceptance_is_not_asked_again(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """A 200 then a cut line, before any event: the run exists upstream, so no second run."""
    powabase.inject_run_fault("drop_at_start")
    with pytest.raises(UpstreamStreamError):
        async for _event in client_for(http, powabase).stream_run(QUESTION):
            pass
    assert len(powabase.runs) == 1


async def test_early_error_event_is_not_retried(powabase: Any, http: httpx.AsyncClient) -> None:
    """An `error` event before `start` is an answer from the backend, raised without a retry."""
    powabase.inject_run_fault("early_error", body="Orchestration not found")
    with pytest.raises(UpstreamRunError):
        await collect(client_for(http, powabase))
    assert len(powabase.runs) == 1


# --- many streams at once ------------------------------------------------------------------------


async def test_more_than_100_streams_can_be_open_at_once(
    powabase: Any, http: httpx.AsyncClient
) -> None:
    """150 answers in flight each get their stream opened; none waits for a pool slot."""
    streams = 150
    powabase.inject_run_fault("delay", delay=30.0, times=streams)
    client = PowabaseClient(http, powabase.orchestration_id)
    opened = 0
    all_open = asyncio.Event()

    async def on_response(response: httpx.Response) -> None:
        nonlocal opened
        opened += 1
        if opened == streams:
            all_open.set()

    http.event_hooks["response"].append(on_response)

    async def first_event() -> StreamEvent:
        stream = client.stream_run(QUESTION)
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(first_event()) for _ in range(streams)]
    try:
        async with asyncio.timeout(10):
            await all_open.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(powabase.runs) == streams


# --- the pure retry arithmetic -------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """`Retry-After` is read as seconds or as an HTTP date; junk and the past mean no wait."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


def test_retry_delay_doubles_and_is_capped() -> None:
    """Backoff doubles per attempt, Retry-After wins over it, and max_delay caps both."""
    assert [retry_delay(n, backoff=0.5, max_delay=8.0, jitter=0.5) for n in (1, 2, 3)] == [
        0.5,
        1.0,
        2.0,
    ]
    assert retry_delay(6, backoff=0.5, max_delay=8.0, jitter=0.5) == 8.0
    assert retry_delay(1, backoff=0.5, max_delay=8.0, retry_after=3.0) == 3.0
    assert retry_delay(1, backoff=0.5, max_delay=8.0, retry_after=3600.0) == 8.0
    assert retry_delay(1, backoff=1.0, max_delay=8.0, jitter=0.0) == 0.5
