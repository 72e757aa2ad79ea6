"""The Powabase streaming client: one orchestration run in, typed events out.

httpx-sse turns bytes into SSE frames; `parse_event` turns frames into typed events. Every httpx /
httpx-sse exception is translated into the `UpstreamError` tree by `_upstream_error`, the one
place where they can surface.

A run that fails before Powabase accepted it (a proxy's 429/502/503, a refused or reset
connection) is retried with backoff. Once a 2xx answer arrived the run exists upstream (the
question is in the session's history), so it is never sent again: a second attempt would ask it
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

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
from bot.retry import parse_retry_after, retry_delay

log = structlog.get_logger(__name__)

BODY_EXCERPT = 300
# Answers a reverse proxy (or an overloaded backend) gives when the question never got through;
# worth a retry. Not 504: the proxy forwarded it and stopped waiting, so the run may exist.
RETRYABLE_STATUSES = frozenset({429, 502, 503})
# Statuses whose `Retry-After` header we honour (RFC 9110 §10.2.3, RFC 6585 §4).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# Failures that happen before the server could have sent anything back (refused, reset, no
# answer to the handshake). Read timeouts are not here: the run may simply be slow. A reset
# before the response headers is usually a pooled keep-alive connection the server had
# already closed, so it is retried, accepting the small chance that the question got through.
RETRYABLE_TRANSPORT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def make_http_client(
    base_url: str,
    api_key: str,
    *,
    idle_timeout: float = 120.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one httpx client for Powabase: both auth headers, a read timeout above keepalives.

    No cap on open connections: every answer in flight holds one stream open for its whole run,
    and httpx's default cap of 100 would make the 101st answer wait for a free slot.
    """
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"apikey": api_key, "Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(connect=10.0, read=idle_timeout, write=10.0, pool=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        transport=transport,
        trust_env=False,
    )


def _upstream_error(exc: Exception, url: str, attempts: int = 1) -> UpstreamError:
    """The UpstreamError for a foreign exception raised while talking to ``url``."""
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    match exc:
        case UpstreamError():
            return exc
        case httpx.TimeoutException():
            return UpstreamTimeoutError(
                f"Powabase timed out ({type(exc).__name__}) on {url}{tried}"
            )
        case httpx.ConnectError():
            return UpstreamConnectError(f"cannot connect to Powabase at {url}{tried}: {exc}")
        case httpx.RemoteProtocolError() | httpx.ReadError() | httpx.StreamError():
            return UpstreamStreamError(f"Powabase stream broke off{tried}: {exc}")
        case SSEError():
            return UpstreamStreamError(f"Powabase did not answer with an event stream: {exc}")
        case _:
            return UpstreamConnectError(f"Powabase request failed{tried}: {exc}")


@contextlib.contextmanager
def _translate_errors(url: str) -> Iterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except (httpx.HTTPError, SSEError) as exc:
        raise _upstream_error(exc, url) from exc


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text[:BODY_EXCERPT] + ("…" if len(text) > BODY_EXCERPT else "")


class _RetryableStatus(Exception):
    """A 429/502/503 before the stream started; carries the error to raise on giving up."""

    def __init__(self, error: UpstreamStatusError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class PowabaseClient:
    """Runs the supervisor orchestration for one message and yields its events.

    ``attempts`` bounds how often a run that failed before its first event is tried in all;
    ``backoff`` is the first pause between attempts (doubling, jittered) and ``max_delay`` caps
    every pause, including one asked for by `Retry-After`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        orchestration_id: str,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        max_delay: float = 8.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"PowabaseClient attempts must be at least 1, got {attempts}")
        if backoff < 0 or max_delay < 0:
            raise ValueError("PowabaseClient backoff and max_delay must not be negative")
        self.http = http
        self.orchestration_id = orchestration_id
        self.attempts = attempts
        self.backoff = backoff
        self.max_delay = max_delay

    def run_path(self) -> str:
        return f"/api/orchestrations/{self.orchestration_id}/run/stream"

    async def stream_run(
        self, message: str, session_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Yield every event of one run; raise an UpstreamError unless it ends with `complete`.

        A failed run (`error` event or `complete` with status failed) is yielded first, so the
        caller's state shows it, and then raised as UpstreamRunError. Failures before the first
        event are retried (see the class docstring); later ones are raised at once.
        """
        path = self.run_path()
        body = {"message": message, "session_id": session_id}
        terminal: StreamEvent | None = None
        attempt = 0
        with _translate_errors(path):
            while True:
                attempt += 1
                accepted = False
                try:
                    async with aconnect_sse(self.http, "POST", path, json=body) as source:
                        response = source.response
                        if response.status_code >= 300:
                            raise self._status_error(response, await response.aread(), path)
                        accepted = True
                        async with contextlib.aclosing(source.aiter_sse()) as frames:
                            async for sse in frames:
                                sse_name = sse.event if sse.event != "message" else None
                                event = parse_event(sse_name, sse.data)
                                yield event
                                if isinstance(event, CompleteEvent | ErrorEvent):
                                    terminal = event
                                    break
                    break
                except _RetryableStatus as exc:
                    if attempt >= self.attempts:
                        self._give_up(attempt, f"http_{exc.error.status}")
                        raise exc.error from None
                    delay = self._delay(attempt, exc.retry_after)
                    reason = f"http_{exc.error.status}"
                except RETRYABLE_TRANSPORT_ERRORS as exc:
                    if accepted:
                        raise
                    if attempt >= self.attempts:
                        self._give_up(attempt, type(exc).__name__)
                        raise _upstream_error(exc, path, attempt) from exc
                    delay = self._delay(attempt, None)
                    reason = type(exc).__name__
                log.warning(
                    "powabase_retry",
                    attempt=attempt,
                    attempts=self.attempts,
                    reason=reason,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
        match terminal:
            case None:
                raise UpstreamStreamError("Powabase stream ended without a `complete` event")
            case ErrorEvent():
                raise UpstreamRunError(terminal.message, terminal.code)
            case CompleteEvent(status="failed"):
                raise UpstreamRunError(str(terminal.error or "run failed"))

    @staticmethod
    def _status_error(response: httpx.Response, raw: bytes, path: str) -> Exception:
        """The error for a non-2xx answer: wrapped as retryable when a retry may help."""
        error = UpstreamStatusError(response.status_code, _excerpt(raw), path)
        if response.status_code not in RETRYABLE_STATUSES:
            return error
        retry_after = None
        if response.status_code in RETRY_AFTER_STATUSES:
            header = response.headers.get("retry-after")
            retry_after = parse_retry_after(header, datetime.now(UTC))
        return _RetryableStatus(error, retry_after)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        return retry_delay(
            attempt,
            backoff=self.backoff,
            max_delay=self.max_delay,
            retry_after=retry_after,
            jitter=random.random(),
        )

    def _give_up(self, attempt: int, reason: str) -> None:
        if attempt > 1:
            log.warning("powabase_retries_exhausted", attempts=attempt, reason=reason)
