"""The Powabase streaming client: one orchestration run in, typed events out.

httpx-sse turns bytes into SSE frames; `parse_event` turns frames into typed events. Every httpx /
httpx-sse exception is translated into the `UpstreamError` tree by `_upstream_error`, the one
place where they can surface. `open_powabase(settings)` is the one place a client is built: it
owns its httpx client, closed by `PowabaseClient.aclose()`.

httpx-sse buffers a line until its newline comes, so an upstream that sends one enormous frame
(or never a newline) would grow memory without bound: `FrameSizeGuard` watches the text on its
way to httpx-sse and ends the stream with `UpstreamStreamError` once one frame passes
`MAX_FRAME_CHARS`.

A run that fails before Powabase accepted it (a proxy's 429/502/503, a refused or reset
connection) is retried with backoff. Once a 2xx answer arrived the run exists upstream (the
question is in the session's history), so it is never sent again: a second attempt would ask it
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import httpx
import structlog
from httpx_sse import EventSource, SSEError, aconnect_sse

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

if TYPE_CHECKING:
    from bot.settings import Settings

log = structlog.get_logger(__name__)

BODY_EXCERPT = 300
# The longest one SSE frame may be, in characters. The largest real frame is `complete` (or
# `chunk`) carrying the whole answer: tens of kilobytes at most.
MAX_FRAME_CHARS = 1 << 20
# Answers a reverse proxy (or an overloaded backend) gives when the question never got through;
# worth a retry. Not 504: the proxy forwarded it and stopped waiting, so the run may exist.
RETRYABLE_STATUSES = frozenset({429, 502, 503})
# Statuses whose `Retry-After` header we honour (RFC 9110 §10.2.3, RFC 6585 §4).
RETRY_AFTER_STATUSES = frozenset({429, 503})
# `run_detail`: how long the whole request may take (the answer's sources wait on it, never the
# answer itself), and the largest body read (full search results of every child run).
RUN_DETAIL_TIMEOUT = 5.0
MAX_RUN_DETAIL_BYTES = 8 << 20
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
    trust_env: bool = False,
) -> httpx.AsyncClient:
    """The one httpx client for Powabase: both auth headers, a read timeout above keepalives.

    No cap on open connections: every answer in flight holds one stream open for its whole run,
    and httpx's default cap of 100 would make the 101st answer wait for a free slot.
    ``trust_env`` makes httpx honour HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE from the
    environment: `powabot provision`, run from an operator's machine, wants that; the bot's own
    client ignores them, like its Slack clients.
    """
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"apikey": api_key, "Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(connect=10.0, read=idle_timeout, write=10.0, pool=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        transport=transport,
        trust_env=trust_env,
    )


def open_powabase(
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PowabaseClient:
    """The bot's Powabase client, built from settings; it owns its httpx client (`aclose()`).

    ``http`` replaces the httpx client built here (and is then owned, and closed, the same way);
    ``transport`` lets tests put an httpx transport under the client built here.
    """
    key = settings.POWABASE_API_KEY.get_secret_value() if settings.POWABASE_API_KEY else ""
    http = http or make_http_client(
        settings.powabase_url,
        key,
        idle_timeout=settings.POWABOT_UPSTREAM_TIMEOUT,
        transport=transport,
    )
    return PowabaseClient(http, settings.POWABASE_ORCHESTRATION_ID or "", owns_http=True)


class FrameSizeGuard:
    """Counts the characters of the SSE frame being received; raises past ``limit``.

    Frames end at a blank line (two line breaks in a row: LF, CR or CRLF, possibly split across
    reads). Pure: `feed` each piece of decoded text, in order, before it reaches the decoder.
    """

    _BLANK_LINE = re.compile(r"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")

    def __init__(self, limit: int = MAX_FRAME_CHARS) -> None:
        self.limit = limit
        self.size = 0  # characters since the last frame boundary
        self._tail = ""  # the last two characters seen, for boundaries split across reads

    def feed(self, text: str) -> None:
        scan = self._tail + text
        boundary = max((m.end() for m in self._BLANK_LINE.finditer(scan)), default=None)
        self.size = self.size + len(text) if boundary is None else len(scan) - boundary
        self._tail = scan[-2:]
        if self.size > self.limit:
            raise UpstreamStreamError(
                f"Powabase sent an SSE frame longer than {self.limit} characters"
            )


class _GuardedBody:
    """What httpx-sse's EventSource reads of a response, size-checked on the way through.

    httpx-sse 0.4 (pinned below 0.5) reads exactly these two: ``headers`` for the content type
    and ``aiter_text()`` for the body; tests/powabase covers both through the real client.
    """

    def __init__(self, response: httpx.Response, guard: FrameSizeGuard) -> None:
        self.headers = response.headers
        self._response = response
        self._guard = guard

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            self._guard.feed(text)
            yield text


def _guarded_frames(response: httpx.Response, limit: int) -> EventSource:
    """An EventSource over ``response`` that gives up on a frame longer than ``limit``."""
    return EventSource(cast(httpx.Response, _GuardedBody(response, FrameSizeGuard(limit))))


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
    every pause, including one asked for by `Retry-After`. ``max_frame_chars`` caps one SSE
    frame. With ``owns_http`` the client closes ``http`` in `aclose()`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        orchestration_id: str,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        max_delay: float = 8.0,
        max_frame_chars: int = MAX_FRAME_CHARS,
        owns_http: bool = False,
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
        self.max_frame_chars = max_frame_chars
        self.owns_http = owns_http

    async def aclose(self) -> None:
        """Close the httpx client if this client owns it (see `open_powabase`)."""
        if self.owns_http:
            await self.http.aclose()

    def run_path(self) -> str:
        return f"/api/orchestrations/{self.orchestration_id}/run/stream"

    async def stream_run(
        self, message: str, session_id: str | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield every event of one run; raise an UpstreamError unless it ends with `complete`.

        A failed run (`error` event, or `complete` with any status but "completed") is yielded
        first, so the caller's state shows it, and then raised as UpstreamRunError. Failures
        before the first event are retried (see the class docstring); later ones are raised at
        once.
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
                        guarded = _guarded_frames(response, self.max_frame_chars)
                        async with contextlib.aclosing(guarded.aiter_sse()) as frames:
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
            case CompleteEvent() if not terminal.succeeded:
                error = f": {terminal.error}" if terminal.error else ""
                raise UpstreamRunError(f"run ended with status {terminal.status!r}{error}")

    async def run_detail(
        self, run_id: str, *, within: float = RUN_DETAIL_TIMEOUT
    ) -> dict[str, Any]:
        """The run's detail (`GET /api/orchestrations/runs/{run_id}`) as a JSON object.

        One attempt, ``within`` seconds in all (no retries: it only adds sources to an
        answer already shown). Raises UpstreamStatusError for a non-2xx answer (404 once the
        run is unknown), UpstreamTimeoutError, UpstreamConnectError, and UpstreamStreamError for
        a body that is not a JSON object or is larger than `MAX_RUN_DETAIL_BYTES`.
        """
        path = f"/api/orchestrations/runs/{quote(run_id, safe='')}"
        with _translate_errors(path):
            try:
                async with asyncio.timeout(within):
                    raw = await self._read_capped(path, within)
            except TimeoutError as exc:
                raise UpstreamTimeoutError(
                    f"Powabase run detail took longer than {within:g} s on {path}"
                ) from exc
        try:
            detail = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UpstreamStreamError(f"Powabase run detail is not JSON: {_excerpt(raw)}") from exc
        if not isinstance(detail, dict):
            raise UpstreamStreamError(f"Powabase run detail is not an object: {_excerpt(raw)}")
        return detail

    async def _read_capped(self, path: str, within: float) -> bytes:
        """GET ``path``; its body, or UpstreamStatusError / UpstreamStreamError."""
        async with self.http.stream("GET", path, timeout=httpx.Timeout(within)) as response:
            if response.status_code >= 300:
                raise UpstreamStatusError(
                    response.status_code, _excerpt(await response.aread()), path
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RUN_DETAIL_BYTES:
                    raise UpstreamStreamError(
                        f"Powabase run detail is larger than {MAX_RUN_DETAIL_BYTES} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)

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
