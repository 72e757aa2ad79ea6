"""The Powabase streaming client: one orchestration run in, typed events out.

httpx-sse turns bytes into SSE frames; `parse_event` turns frames into typed events. Every httpx /
httpx-sse exception is translated into the `UpstreamError` tree in `_translate_errors`, the one
place where they can surface.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import structlog
from httpx_sse import SSEError, aconnect_sse

from bot.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamRunError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from bot.powabase.events import CompleteEvent, ErrorEvent, StreamEvent, parse_event

log = structlog.get_logger(__name__)

BODY_EXCERPT = 300


def make_http_client(
    base_url: str,
    api_key: str,
    *,
    idle_timeout: float = 120.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one httpx client for Powabase: both auth headers, a read timeout above keepalives."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"apikey": api_key, "Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(connect=10.0, read=idle_timeout, write=10.0, pool=10.0),
        transport=transport,
        trust_env=False,
    )


@contextlib.contextmanager
def _translate_errors(url: str) -> Iterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except httpx.TimeoutException as exc:
        raise UpstreamTimeoutError(f"Powabase timed out ({type(exc).__name__}) on {url}") from exc
    except httpx.ConnectError as exc:
        raise UpstreamConnectError(f"cannot connect to Powabase at {url}: {exc}") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamError) as exc:
        raise UpstreamStreamError(f"Powabase stream broke off: {exc}") from exc
    except SSEError as exc:
        raise UpstreamStreamError(f"Powabase did not answer with an event stream: {exc}") from exc
    except httpx.HTTPError as exc:
        raise UpstreamConnectError(f"Powabase request failed: {exc}") from exc


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text[:BODY_EXCERPT] + ("…" if len(text) > BODY_EXCERPT else "")


class PowabaseClient:
    """Runs the supervisor orchestration for one message and yields its events."""

    def __init__(self, http: httpx.AsyncClient, orchestration_id: str) -> None:
        self.http = http
        self.orchestration_id = orchestration_id

    def run_path(self) -> str:
        return f"/api/orchestrations/{self.orchestration_id}/run/stream"

    async def stream_run(
        self, message: str, session_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Yield every event of one run; raise an UpstreamError unless it ends with `complete`.

        A failed run (`error` event or `complete` with status failed) is yielded first, so the
        caller's state shows it, and then raised as UpstreamRunError.
        """
        path = self.run_path()
        body = {"message": message, "session_id": session_id}
        terminal: StreamEvent | None = None
        with _translate_errors(path):
            async with aconnect_sse(self.http, "POST", path, json=body) as source:
                response = source.response
                if response.status_code >= 300:
                    raw = await response.aread()
                    raise UpstreamStatusError(response.status_code, _excerpt(raw), path)
                async with contextlib.aclosing(source.aiter_sse()) as frames:
                    async for sse in frames:
                        sse_name = sse.event if sse.event != "message" else None
                        event = parse_event(sse_name, sse.data)
                        yield event
                        if isinstance(event, CompleteEvent | ErrorEvent):
                            terminal = event
                            break
        match terminal:
            case None:
                raise UpstreamStreamError("Powabase stream ended without a `complete` event")
            case ErrorEvent():
                raise UpstreamRunError(terminal.message, terminal.code)
            case CompleteEvent(status="failed"):
                raise UpstreamRunError(str(terminal.error or "run failed"))
