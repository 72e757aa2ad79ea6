"""Slack write calls: the one boundary where slack_sdk's failures become ours, and the retry
rule for writes that must happen. Both the classic publisher and native streaming call through
a `SlackCaller`; nothing else in powabot calls Slack's write methods.

Every failure of a call ends up in exactly one class (`classify` is the rule, pure):

* `RateLimited`: HTTP 429, or `{"ok": false, "error": "ratelimited"}` with HTTP 200. Carries
  `Retry-After` (seconds or an HTTP date) clamped to `bot.retry.MAX_RETRY_AFTER`, 1 s when
  missing or unreadable. The method's bucket is paused for that long.
* `Transient`: any 5xx; Slack's own "try again" codes; any body that is not Slack's JSON (a
  proxy's plain-text "upstream connect error ..." 503, an HTML 502, a cut-off body, a text/plain
  HTTP 200); a connection reset or timeout; anything else slack_sdk (or aiohttp under it)
  raises that is not Slack refusing the call. Retried with `bot.retry.retry_delay` (jittered
  backoff); a 5xx carrying `Retry-After` is retried after that (clamped) instead, and pauses the
  method's bucket like a 429 does. Bounded by `max_attempts`.
* `SlackDeliveryError`: Slack refused the call itself and retrying cannot help. Among them
  `channel_gone` (not_in_channel, channel_not_found, is_archived) and `auth_failed`
  (invalid_auth, token_revoked, account_inactive, ...): the latter also raises an operator
  alert (once per burst) that the next successful call clears.

Every call is counted in `powabot_slack_calls_total{method,result}` (result: ok, ratelimited,
transient, refused) and every 429 in `powabot_slack_ratelimited_total{method}`. Budgets are
reserved through `SlackCaller.acquire` (the one place their waits are slept and measured).

`RateLimited` and `Transient` never leave `bot.slack`: `call_reliably` turns them into waits
and, past its deadline or attempt count, into `SlackDeliveryError`.

Which token: the client's own (SLACK_BOT_TOKEN), unless `SLACK_TOKEN` holds the bot token of
the workspace the current request or answer belongs to (OAuth install, several workspaces:
`bot.slack.oauth` sets it); then every call of that task, and of the tasks it starts, uses it.

Besides Web API methods, `SlackCaller.upload` POSTs a file's bytes to the upload URL that
`files.getUploadURLExternal` hands out (Slack's current upload flow; see `bot.slack.files`).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.errors import SLACK_EDIT_REFUSED, SlackDeliveryError
from bot.metrics import BUDGET_WAIT_SECONDS, FIRST_TEXT_SECONDS, SLACK_CALLS, SLACK_RATELIMITED
from bot.render.message import SlackMessage
from bot.retry import MAX_RETRY_AFTER, clamp_retry_after, parse_retry_after, retry_delay
from bot.slack.budget import Budget

log = structlog.get_logger(__name__)

# chat.update refusals that mean "post a new message instead" (the answer must not be lost).
REPOST_ERRORS = SLACK_EDIT_REFUSED | {"streaming_state_conflict"}  # an adopted native stream
# Slack's own codes for "our side failed, try again" (they may come with HTTP 200).
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
MAX_ATTEMPTS = 5  # transient failures of one reliable write; 429s are not counted
RELIABLE_DEADLINE = 180.0  # seconds a write that must happen keeps waiting out 429s
BACKOFF = 0.5  # nominal first backoff after a transient failure; doubles per attempt (jittered)
MAX_BACKOFF = 8.0

UPLOAD = "files.upload"  # how the POST to an upload URL is named in logs and metrics

# The bot token of the workspace the current request or answer belongs to (OAuth install);
# None: the client's own token (single-workspace token mode).
SLACK_TOKEN: ContextVar[str | None] = ContextVar("slack_token", default=None)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class RateLimited(Exception):
    """Slack said "not now" (429 or `ratelimited`); `retry_after` is clamped seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"ratelimited, retry after {retry_after:g}s")
        self.retry_after = retry_after


class Transient(Exception):
    """The call failed in a way a retry may fix (5xx, proxy error page, reset, timeout).

    `retry_after` is the clamped seconds a 5xx's `Retry-After` asked for, else None (back off).
    `ambiguous`: the request may have reached Slack and taken effect (the connection broke
    after it was sent, or a proxy answered in Slack's place); a post must not simply be sent
    again (see `AnswerStream` in bot.slack.publisher).
    """

    def __init__(
        self, detail: str, retry_after: float | None = None, *, ambiguous: bool = False
    ) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


Failure = RateLimited | Transient | SlackDeliveryError


def _error_code(body: object) -> str | None:
    """Slack's error code when `body` is Slack's JSON error answer, else None."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, str) and error:
            return error
    return None


def classify(
    method: str,
    status: int | None,
    body: object,
    retry_after: str | None = None,
    *,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> Failure:
    """The class of a failed Slack call from its HTTP status, parsed body and `Retry-After`.

    `body` is whatever could be parsed: Slack's JSON object, a string (a proxy's text page),
    None or an empty dict (nothing parseable). Pure: no I/O, no clock reads beyond the
    `Retry-After` date.
    """
    error = _error_code(body)
    if status == 429 or error == "ratelimited":
        return RateLimited(clamp_retry_after(retry_after, maximum=max_retry_after))
    server_wait = _server_wait(status, retry_after, max_retry_after)
    if error is None:  # not Slack's answer: a proxy's page, a cut-off or empty body
        return Transient(f"HTTP {status}: no Slack error in the body", server_wait, ambiguous=True)
    if (status is not None and status >= 500) or error in TRANSIENT_ERRORS:
        return Transient(error, server_wait)
    return SlackDeliveryError(method, error)


def _result(failure: Failure) -> str:
    """The `result` label of a failed call: ratelimited, transient or refused."""
    if isinstance(failure, RateLimited):
        return "ratelimited"
    return "transient" if isinstance(failure, Transient) else "refused"


def _server_wait(status: int | None, retry_after: str | None, maximum: float) -> float | None:
    """A 5xx's readable `Retry-After`, clamped to `maximum`; None otherwise (plain backoff)."""
    if status is None or status < 500:
        return None
    seconds = parse_retry_after(retry_after)
    return None if seconds is None else min(seconds, maximum)


def _header(headers: object, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return str(value)
    return None


def translate(method: str, exc: Exception) -> Failure:
    """What slack_sdk (or aiohttp under it) raised, as one of our classes.

    slack_sdk 3.x raises SlackApiError whose `response` is an AsyncSlackResponse (`data` is a
    dict, a str for text/plain bodies, {} for other non-JSON bodies) or, when a JSON content
    type carries an unparseable body, the raw aiohttp.ClientResponse; resets and timeouts come
    through as aiohttp.ClientError / TimeoutError. Anything else (slack_sdk's own validation
    tripping over an HTTP 200 text/plain body raises AttributeError) is not Slack refusing the
    call, so it is transient too: `max_attempts` bounds it, and it is logged by type.
    """
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        body = response.data if hasattr(response, "status_code") else None
        retry_after = _header(getattr(response, "headers", None), "Retry-After")
        return classify(method, status if isinstance(status, int) else None, body, retry_after)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        never_sent = isinstance(exc, aiohttp.ClientConnectorError)  # no connection at all
        return Transient(type(exc).__name__, ambiguous=not never_sent)
    return Transient(f"unexpected: {type(exc).__name__}", ambiguous=True)


def _auth_headers() -> dict[str, str] | None:
    """The request's own Authorization when a workspace token is in effect (slack_sdk merges a
    request's headers over the client's token), else None: the client's token."""
    token = SLACK_TOKEN.get()
    return {"Authorization": f"Bearer {token}"} if token else None


def payload_args(message: SlackMessage) -> dict[str, Any]:
    """chat.postMessage / chat.update arguments for one message (links never unfurl)."""
    args: dict[str, Any] = {"text": message.text, "unfurl_links": False, "unfurl_media": False}
    if message.blocks is not None:
        args["blocks"] = message.blocks
    if message.attachments is not None:
        args["attachments"] = message.attachments
    return args


class SlackCaller:
    """Calls Slack write methods: `call` tries once, `call_reliably` until Slack accepts.

    `clock` and `sleep` are injectable so tests can run retries without real waiting. Calls go
    through a copy of `client` without slack_sdk's own retry of a broken connection: that retry
    would send a post again blindly, and one that had landed would show twice. Every retry
    here is ours, and a post is only sent again once it is known not to have landed.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        alerts: OperatorAlerts,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        reliable_deadline: float = RELIABLE_DEADLINE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.client = copy.copy(client)
        self.client.retry_handlers = []  # no blind retries (see the class docstring)
        self.alerts = alerts
        self.clock = clock
        self.sleep = sleep
        self.reliable_deadline = reliable_deadline
        self.max_attempts = max_attempts

    async def acquire(self, budget: Budget, *, max_wait: float, reserve: float = 0.0) -> bool:
        """Reserve one call on `budget` and sleep whatever wait it asks for; False (nothing
        reserved, nothing slept) when that wait would be longer than `max_wait` seconds."""
        started = self.clock()
        wait = await budget.reserve(max_wait=max_wait, reserve=reserve)
        if wait is None:
            return False
        BUDGET_WAIT_SECONDS.observe(wait + max(0.0, self.clock() - started))
        if wait > 0:
            await self.sleep(wait)
        return True

    async def call(self, method: str, bucket: Budget, **args: Any) -> dict[str, Any]:
        """One Slack write; raises RateLimited / Transient / SlackDeliveryError, nothing else."""
        try:
            response = await self.client.api_call(method, json=args, headers=_auth_headers())
        except Exception as exc:
            failure = translate(method, exc)
            await self._noted(method, bucket, failure)
            raise failure from exc
        SLACK_CALLS.labels(method, "ok").inc()
        self.alerts.clear("slack")
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def read(self, method: str, bucket: Budget, **params: Any) -> dict[str, Any]:
        """One Slack read (GET with query arguments); fails like `call`."""
        try:
            response = await self.client.api_call(
                method, http_verb="GET", params=params, headers=_auth_headers()
            )
        except Exception as exc:
            failure = translate(method, exc)
            await self._noted(method, bucket, failure)
            raise failure from exc
        SLACK_CALLS.labels(method, "ok").inc()
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def _noted(self, method: str, bucket: Budget, failure: Failure) -> None:
        SLACK_CALLS.labels(method, _result(failure)).inc()
        if isinstance(failure, RateLimited):
            SLACK_RATELIMITED.labels(method).inc()
            log.warning("slack_ratelimited", method=method, retry_after=failure.retry_after)
            await bucket.push(failure.retry_after)
        elif isinstance(failure, Transient):
            if failure.retry_after is not None:  # a 5xx that said when to come back
                await bucket.push(failure.retry_after)
            level = log.warning if str(failure).startswith("unexpected:") else log.info
            level(
                "slack_call_failed_transiently",
                method=method,
                error=str(failure),
                retry_after=failure.retry_after,
            )
        elif failure.auth_failed:
            self.alerts.alert("slack", failure.error, detail=method)

    async def call_reliably(
        self, method: str, bucket: Budget, *, take: bool = True, **args: Any
    ) -> dict[str, Any]:
        """A write that must happen: wait for budget, honour Retry-After, back off on 5xx.

        Waits its turn for budget (always: a final edit is never skipped); the deadline
        counts from the first turn. A 429 storm is waited out (the budget is pushed by
        Retry-After) until the deadline;
        only transient failures count against `max_attempts`. Slack refusing the call itself
        (including a bad token) raises SlackDeliveryError at once: no retry storm.
        """
        return await self.reliably(method, bucket, lambda: self.call(method, bucket, **args), take)

    async def reliably(
        self,
        method: str,
        bucket: Budget,
        attempt: Callable[[], Awaitable[T]],
        take: bool = True,
    ) -> T:
        """Run `attempt` (which raises RateLimited / Transient / SlackDeliveryError) by the
        rule of `call_reliably`; `method` names it in the SlackDeliveryError that gives up."""
        give_up: float | None = None  # counted from our turn, not from queueing for the bucket
        failures = 0
        while True:
            if take:
                # Our turn, however long the line (as many finals as answers ending at once):
                # the deadline bounds Retry-After and backoff waits, never the queueing.
                await self.acquire(bucket, max_wait=math.inf)
            take = True
            if give_up is None:
                give_up = self.clock() + self.reliable_deadline
            try:
                return await attempt()
            except RateLimited as exc:
                if self.clock() + exc.retry_after > give_up:
                    raise SlackDeliveryError(method, "ratelimited") from exc
            except Transient as exc:
                failures += 1
                told = exc.retry_after  # a 5xx's Retry-After: the paused bucket waits it out
                delay = (
                    told
                    if told is not None
                    else retry_delay(failures, backoff=BACKOFF, max_delay=MAX_BACKOFF)
                )
                if failures >= self.max_attempts or self.clock() + delay > give_up:
                    raise SlackDeliveryError(method, str(exc)) from exc
                if told is None:
                    await self.sleep(delay)

    async def upload(self, url: str, content: bytes) -> None:
        """POST a file's bytes to an upload URL from files.getUploadURLExternal (no token: the
        URL is the credential). Raises Transient (reset, timeout, 5xx, 429) or
        SlackDeliveryError("files.upload", "HTTP <status>") when the upload was refused."""
        client = self.client
        session = client.session if client.session and not client.session.closed else None
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.timeout))
        options: dict[str, Any] = {"proxy": client.proxy or None}
        if client.ssl is not None:
            options["ssl"] = client.ssl
        try:
            async with session.post(url, data=content, **options) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            SLACK_CALLS.labels(UPLOAD, "transient").inc()
            log.info("slack_upload_failed_transiently", error=type(exc).__name__)
            raise Transient(type(exc).__name__) from exc
        finally:
            if owned:
                await session.close()
        if status == 200:
            SLACK_CALLS.labels(UPLOAD, "ok").inc()
            return
        log.warning("slack_upload_refused", status=status)
        if status >= 500 or status == 429:
            SLACK_CALLS.labels(UPLOAD, "ratelimited" if status == 429 else "transient").inc()
            if status == 429:
                SLACK_RATELIMITED.labels(UPLOAD).inc()
            raise Transient(f"upload HTTP {status}")
        SLACK_CALLS.labels(UPLOAD, "refused").inc()
        raise SlackDeliveryError(UPLOAD, f"HTTP {status}")


async def sleep_unless(sleep: Sleep, seconds: float, event: asyncio.Event) -> None:
    """Wait `seconds` with `sleep` (the injectable clock's), or less if `event` is set first.

    Streams pace themselves with this, so a fake clock drives their pacing in tests.
    """
    if seconds <= 0 or event.is_set():
        return
    napping = asyncio.ensure_future(sleep(seconds))
    woken = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({napping, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        napping.cancel()
        woken.cancel()
        await asyncio.wait({napping, woken})
    failure = None if napping.cancelled() else napping.exception()
    if failure is not None:
        raise failure


async def delivered(step: Awaitable[None], method: str) -> None:
    """Await a final delivery `step`: it ends normally only when Slack accepted the final text.

    SlackDeliveryError passes through; anything unexpected is logged with its traceback and
    raised as SlackDeliveryError(method, "unexpected: <TypeName>"), so callers handle one type.
    """
    try:
        await step
    except SlackDeliveryError:
        raise
    except Exception as exc:
        log.exception("answer_finish_crashed")
        raise SlackDeliveryError(method, f"unexpected: {type(exc).__name__}") from exc


class Orphanable(Protocol):
    """A stream whose flusher may outlive the `finish()` that waited for it."""

    orphaned: bool


async def outlive_flusher(stream: Orphanable, task: asyncio.Task[None]) -> bool:
    """Wait for `stream`'s flusher to deliver the final state: True when it did, False when it
    crashed (logged; the caller recovers). SlackDeliveryError passes through.

    Shielded: a shutdown cancelling the answer must not cancel its final edit; the flusher then
    finishes alone (`orphaned`), and the publisher logs it if it fails.
    """
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        stream.orphaned = True
        raise
    except SlackDeliveryError:
        raise
    except Exception:
        log.exception("answer_flusher_crashed")
        return False
    return True


class FirstText:
    """Times `powabot_first_text_seconds`: from the first answer text reaching a stream
    (`arrived`, called on every update) to the first Slack write showing it (`shown`)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._arrived: float | None = None
        self._shown = False

    def arrived(self, has_text: bool) -> None:
        if has_text and self._arrived is None:
            self._arrived = self._clock()

    def shown(self) -> None:
        if self._arrived is not None and not self._shown:
            self._shown = True
            FIRST_TEXT_SECONDS.observe(max(0.0, self._clock() - self._arrived))
