"""Slack write calls: the one boundary where slack_sdk's failures become ours, and the retry
rule for writes that must happen. Both the classic publisher and native streaming call through
a `SlackCaller`; nothing else in powabot calls Slack's write methods.

Every failure of a call ends up in exactly one class (`classify` is the rule, pure):

* `RateLimited`: HTTP 429, or `{"ok": false, "error": "ratelimited"}` with HTTP 200. Carries
  `Retry-After` (seconds or an HTTP date) clamped to `bot.retry.MAX_RETRY_AFTER`, 1 s when
  missing or unreadable. The method's bucket is paused for that long.
* `Transient`: any 5xx; Slack's own "try again" codes; any body that is not Slack's JSON (a
  proxy's plain-text "upstream connect error ..." 503, an HTML 502, a cut-off body); a
  connection reset or timeout. Retried with `bot.retry.retry_delay` (jittered backoff).
* `SlackDeliveryError`: Slack refused the call itself and retrying cannot help. Among them
  `channel_gone` (not_in_channel, channel_not_found, is_archived) and `auth_failed`
  (invalid_auth, token_revoked, account_inactive, ...): the latter also raises an operator
  alert (once per burst) that the next successful call clears. Anything slack_sdk raises that
  fits nowhere else becomes ``SlackDeliveryError(method, "unexpected: <TypeName>")``.

`RateLimited` and `Transient` never leave `bot.slack`: `call_reliably` turns them into waits
and, past its deadline or attempt count, into `SlackDeliveryError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.errors import SLACK_EDIT_REFUSED, SlackDeliveryError
from bot.render.message import SlackMessage
from bot.retry import MAX_RETRY_AFTER, clamp_retry_after, retry_delay
from bot.slack.budget import TokenBucket

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

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimited(Exception):
    """Slack said "not now" (429 or `ratelimited`); `retry_after` is clamped seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"ratelimited, retry after {retry_after:g}s")
        self.retry_after = retry_after


class Transient(Exception):
    """The call failed in a way a retry may fix (5xx, proxy error page, reset, timeout)."""


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
    if error is None:  # not Slack's answer: a proxy's page, a cut-off or empty body
        return Transient(f"HTTP {status}: no Slack error in the body")
    if (status is not None and status >= 500) or error in TRANSIENT_ERRORS:
        return Transient(error)
    return SlackDeliveryError(method, error)


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
    through as aiohttp.ClientError / TimeoutError.
    """
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        body = response.data if hasattr(response, "status_code") else None
        retry_after = _header(getattr(response, "headers", None), "Retry-After")
        return classify(method, status if isinstance(status, int) else None, body, retry_after)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return Transient(type(exc).__name__)
    return SlackDeliveryError(method, f"unexpected: {type(exc).__name__}")


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

    `clock` and `sleep` are injectable so tests can run retries without real waiting.
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
        self.client = client
        self.alerts = alerts
        self.clock = clock
        self.sleep = sleep
        self.reliable_deadline = reliable_deadline
        self.max_attempts = max_attempts

    async def call(self, method: str, bucket: TokenBucket, **args: Any) -> dict[str, Any]:
        """One Slack write; raises RateLimited / Transient / SlackDeliveryError, nothing else."""
        try:
            response = await self.client.api_call(method, json=args)
        except Exception as exc:
            failure = translate(method, exc)
            self._noted(method, bucket, failure)
            raise failure from exc
        self.alerts.clear("slack")
        return dict(response.data) if isinstance(response.data, dict) else {}

    def _noted(self, method: str, bucket: TokenBucket, failure: Failure) -> None:
        if isinstance(failure, RateLimited):
            bucket.pause(failure.retry_after)
            log.warning("slack_ratelimited", method=method, retry_after=failure.retry_after)
        elif isinstance(failure, Transient):
            log.info("slack_call_failed_transiently", method=method, error=str(failure))
        elif failure.auth_failed:
            self.alerts.alert("slack", failure.error, detail=method)
        elif failure.error.startswith("unexpected:"):
            log.error("slack_call_unexpected_error", method=method, error=failure.error)

    async def call_reliably(
        self, method: str, bucket: TokenBucket, *, take: bool = True, **args: Any
    ) -> dict[str, Any]:
        """A write that must happen: wait for budget, honour Retry-After, back off on 5xx.

        A 429 storm is waited out (the bucket is paused for Retry-After) until the deadline;
        only transient failures count against `max_attempts`. Slack refusing the call itself
        (including a bad token) raises SlackDeliveryError at once: no retry storm.
        """
        give_up: float | None = None  # counted from our turn, not from queueing for the bucket
        failures = 0
        while True:
            if take:
                await bucket.take()
            take = True
            if give_up is None:
                give_up = self.clock() + self.reliable_deadline
            try:
                return await self.call(method, bucket, **args)
            except RateLimited as exc:
                if self.clock() + exc.retry_after > give_up:
                    raise SlackDeliveryError(method, "ratelimited") from exc
            except Transient as exc:
                failures += 1
                delay = retry_delay(failures, backoff=BACKOFF, max_delay=MAX_BACKOFF)
                if failures >= self.max_attempts or self.clock() + delay > give_up:
                    raise SlackDeliveryError(method, str(exc)) from exc
                await self.sleep(delay)


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
