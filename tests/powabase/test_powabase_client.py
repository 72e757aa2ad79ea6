"""The Powabase client turns a byte stream into typed events and failures into typed errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
import pytest

from bot.errors import (
    UpstreamConnectError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from bot.powabase.client import FrameSizeGuard, PowabaseClient, make_http_client, open_powabase
from bot.powabase.events import (
    ChunkEvent,
    CompleteEvent,
    ContentDeltaEvent,
    DelegationStartedEvent,
    StartEvent,
    StreamEvent,
    UnknownEvent,
)
from bot.settings import Settings

ANSWER = "Refunds: 30 days — naïve café ☕ 🇫🇷"
FRAMES = [
    {"event": "start", "run_id": "orch_run_1", "session_id": "orch_sess_1"},
    {"event": "delegation_started", "agent": "billing-agent", "task": "refund window"},
    {"event": "content_delta", "delta": ANSWER[:12]},
    {"event": "content_delta", "delta": ANSWER[12:]},
    {"event": "chunk", "content": ANSWER},
    {"event": "complete", "run_id": "orch_run_1", "session_id": "orch_sess_1", "content": ANSWER},
]


def sse_bytes(frames: Iterable[dict[str, object]], newline: str = "\n") -> bytes:
    out = "".join(f"data: {json.dumps(f, ensure_ascii=False)}{newline}{newline}" for f in frames)
    return out.encode("utf-8")


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> PowabaseClient:
    http = make_http_client("http://127.0.0.1:9", "pb-key", transport=httpx.MockTransport(handler))
    return PowabaseClient(http, "orch_1")


def streaming(chunks: list[bytes], status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body())

    return handler


async def collect(client: PowabaseClient) -> list[StreamEvent]:
    try:
        return [event async for event in client.stream_run("hello", None)]
    finally:
        await client.http.aclose()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
async def test_stream_split_at_every_byte_boundary_yields_the_same_events(size: int) -> None:
    """Frames split anywhere (even inside a UTF-8 character) decode to the same typed events."""
    events = await collect(client_for(streaming(split_every(sse_bytes(FRAMES), size))))
    assert [type(e) for e in events] == [
        StartEvent,
        DelegationStartedEvent,
        ContentDeltaEvent,
        ContentDeltaEvent,
        ChunkEvent,
        CompleteEvent,
    ]
    deltas = "".join(e.delta for e in events if isinstance(e, ContentDeltaEvent))
    assert deltas == ANSWER
    assert isinstance(events[0], StartEvent) and events[0].session_id == "orch_sess_1"


async def test_crlf_split_between_cr_and_lf_is_one_line_break() -> None:
    """A CRLF whose CR ends one read and LF starts the next is not a blank line."""
    data = sse_bytes(FRAMES, newline="\r\n")
    chunks: list[bytes] = []
    start = 0
    for i in range(len(data) - 1):
        if data[i : i + 2] == b"\r\n":
            chunks.append(data[start : i + 1])
            start = i + 1
    chunks.append(data[start:])
    events = await collect(client_for(streaming(chunks)))
    assert [e.event for e in events] == [f["event"] for f in FRAMES]


async def test_comments_event_lines_and_multiline_data() -> None:
    """Keepalive comments are skipped, `event:` names a frame without one, data lines join."""
    raw = (
        b": keepalive\n\n"
        b'data: {"event": "start", "run_id": "r", "session_id": "s"}\n\n'
        b"event: delegation_started\n"
        b'data: {"agent": "technical-agent",\n'
        b'data:  "task": "api keys"}\n\n'
        b": keepalive\n\n"
        b'data: {"event": "complete", "content": "done"}\n\n'
    )
    events = await collect(client_for(streaming([raw])))
    assert [e.event for e in events] == ["start", "delegation_started", "complete"]
    delegation = events[1]
    assert isinstance(delegation, DelegationStartedEvent)
    assert delegation.agent == "technical-agent" and delegation.task == "api keys"


async def test_unknown_events_are_kept_not_fatal() -> None:
    """New engine events (hook_result, model_fallback…) come through as UnknownEvent."""
    frames = [FRAMES[0], {"event": "model_fallback", "to": "other"}, FRAMES[-1]]
    events = await collect(client_for(streaming([sse_bytes(frames)])))
    assert isinstance(events[1], UnknownEvent) and events[1].event == "model_fallback"
    assert isinstance(events[-1], CompleteEvent)


async def test_json_event_field_wins_over_sse_event_line() -> None:
    """The JSON `event` key names the event even when an `event:` line says otherwise."""
    raw = b'event: message\ndata: {"event": "chunk", "content": "x"}\n\n'
    raw += b'data: {"event": "complete"}\n\n'
    events = await collect(client_for(streaming([raw])))
    assert isinstance(events[0], ChunkEvent)


async def test_non_2xx_becomes_status_error_with_body_excerpt() -> None:
    """A 500 with an HTML body is an UpstreamStatusError carrying status and an excerpt."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="<html>" + "x" * 1000 + "</html>")

    with pytest.raises(UpstreamStatusError) as info:
        await collect(client_for(handler))
    assert info.value.status == 500
    assert info.value.body_excerpt.startswith("<html>") and len(info.value.body_excerpt) < 320


async def test_both_auth_headers_are_sent_and_body_has_session() -> None:
    """The API key goes out as `apikey` and as a Bearer token; session_id is in the body."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse_bytes(FRAMES),
        )

    client = client_for(handler)
    try:
        _ = [e async for e in client.stream_run("hi", "orch_sess_x")]
    finally:
        await client.http.aclose()
    assert seen[0].headers["apikey"] == "pb-key"
    assert seen[0].headers["authorization"] == "Bearer pb-key"
    assert json.loads(seen[0].content) == {"message": "hi", "session_id": "orch_sess_x"}
    assert seen[0].url.path == "/api/orchestrations/orch_1/run/stream"


async def test_stream_without_complete_is_a_stream_error() -> None:
    """A body that closes before `complete` raises UpstreamStreamError after the events."""
    with pytest.raises(UpstreamStreamError):
        await collect(client_for(streaming([sse_bytes(FRAMES[:3])])))


async def test_error_event_is_yielded_then_raised() -> None:
    """An `error` event reaches the caller and then ends the run as UpstreamRunError."""
    frames = [FRAMES[0], {"event": "error", "error": "model exploded", "code": "provider"}]
    client = client_for(streaming([sse_bytes(frames)]))
    seen: list[str] = []
    with pytest.raises(UpstreamRunError) as info:
        try:
            async for event in client.stream_run("q"):
                seen.append(event.event)
        finally:
            await client.http.aclose()
    assert seen == ["start", "error"] and info.value.code == "provider"


async def test_timeout_mid_stream_keeps_the_cause() -> None:
    """A read timeout mid-stream is an UpstreamTimeoutError whose __cause__ is httpx's."""

    async def body() -> AsyncIterator[bytes]:
        yield sse_bytes(FRAMES[:1])
        raise httpx.ReadTimeout("silent")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    with pytest.raises(UpstreamTimeoutError) as info:
        await collect(client_for(handler))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening becomes UpstreamConnectError (real socket, closed port, no retries)."""
    http = make_http_client("http://127.0.0.1:9", "k")
    client = PowabaseClient(http, "orch", attempts=1)
    with pytest.raises(UpstreamConnectError):
        await collect(client)


async def test_wrong_content_type_is_stream_error() -> None:
    """A 200 that is not an event stream (a proxy's HTML page) is an UpstreamStreamError."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy</html>")

    with pytest.raises(UpstreamStreamError):
        await collect(client_for(handler))


# --- a cap on one frame -------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [True, False])
async def test_an_oversize_frame_ends_the_stream_after_the_events_before_it(newline: bool) -> None:
    """One `data:` line past the cap (with or without a newline ever coming) is a stream error,
    and every event before it still reaches the caller."""
    huge = b"data: " + b"x" * 40_000 + (b"\n\n" if newline else b"")
    chunks = [sse_bytes(FRAMES[:3]), *split_every(huge, 4096), sse_bytes(FRAMES[3:])]
    http = make_http_client(
        "http://127.0.0.1:9", "k", transport=httpx.MockTransport(streaming(chunks))
    )
    client = PowabaseClient(http, "orch", max_frame_chars=30_000)
    seen: list[StreamEvent] = []
    with pytest.raises(UpstreamStreamError, match="longer than 30000"):
        try:
            async for event in client.stream_run("q"):
                seen.append(event)
        finally:
            await http.aclose()
    assert [e.event for e in seen] == [f["event"] for f in FRAMES[:3]]


async def test_many_frames_each_under_the_cap_pass() -> None:
    """The cap is per frame: a long stream of normal frames (CRLF too) is not cut."""
    frames = [FRAMES[0], *[{"event": "content_delta", "delta": "y" * 900}] * 200, FRAMES[-1]]
    data = sse_bytes(frames, newline="\r\n")
    http = make_http_client(
        "http://127.0.0.1:9", "k", transport=httpx.MockTransport(streaming(split_every(data, 777)))
    )
    client = PowabaseClient(http, "orch", max_frame_chars=2_000)
    events = await collect(client)
    assert len(events) == 202 and isinstance(events[-1], CompleteEvent)


@pytest.mark.parametrize(
    ("pieces", "size"),
    [
        (["data: abc\n\n"], 0),
        (["data: abc\n\ndata: de"], 8),
        (["data: abc\r", "\n", "\r\n"], 0),
        (["data: abc\r", "\ndata: x"], 18),
        (["data: a\n", "data: b\n"], 16),
        (["data: a\n", "\n", "data: b"], 7),
    ],
)
def test_frame_size_guard_counts_since_the_last_blank_line(pieces: list[str], size: int) -> None:
    """The guard's count restarts at every blank line, whatever the line breaks and splits."""
    guard = FrameSizeGuard(limit=100)
    for piece in pieces:
        guard.feed(piece)
    assert guard.size == size


# --- how a run ends -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["cancelled", "timeout", "paused", "failed"])
async def test_complete_with_any_status_but_completed_is_a_run_error(status: str) -> None:
    """A `complete` that is not "completed" is yielded, then raised as UpstreamRunError."""
    frames = [FRAMES[0], {"event": "complete", "status": status, "content": ""}]
    client = client_for(streaming([sse_bytes(frames)]))
    seen: list[StreamEvent] = []
    with pytest.raises(UpstreamRunError, match=status):
        try:
            async for event in client.stream_run("q"):
                seen.append(event)
        finally:
            await client.http.aclose()
    assert isinstance(seen[-1], CompleteEvent) and seen[-1].status == status


async def test_open_powabase_builds_the_client_from_settings_and_closes_it() -> None:
    """The factory sends the configured key to the configured orchestration; aclose closes it."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=sse_bytes(FRAMES)
        )

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        POWABASE_URL="http://127.0.0.1:9/",
        POWABASE_API_KEY="pb-secret",
        POWABASE_ORCHESTRATION_ID="orch_9",
    )
    client = open_powabase(settings, transport=httpx.MockTransport(handler))
    events = [e async for e in client.stream_run("hi")]
    await client.aclose()
    assert isinstance(events[-1], CompleteEvent) and client.http.is_closed
    assert seen[0].url == "http://127.0.0.1:9/api/orchestrations/orch_9/run/stream"
    assert seen[0].headers["authorization"] == "Bearer pb-secret"
