"""The one rule that classes every failed Slack call (bot/slack/calls.py), tested as data, and
the retry rule it feeds (one call through the Slack stand-in, on a fake clock)."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts import OperatorAlerts
from bot.errors import SlackDeliveryError
from bot.retry import MAX_RETRY_AFTER
from bot.slack.budget import TokenBucket
from bot.slack.calls import RateLimited, SlackCaller, Transient, classify, translate
from sandbox.slack import SlackStandin
from tests.fakes import FakeClock

ENVOY = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (503, ENVOY),  # Envoy/Istio's plain-text page
        (502, {}),  # an HTML page slack_sdk could not read as JSON
        (504, None),  # an unparseable body
        (200, {}),  # a 200 whose body is not Slack's JSON
        (500, {"ok": False, "error": "internal_error"}),
        (200, {"ok": False, "error": "service_unavailable"}),
        (503, {"ok": False, "error": "whatever_code"}),  # any 5xx
        (404, "<html>not found</html>"),  # a proxy's page for any status
    ],
)
def test_non_json_bodies_and_5xx_are_transient(status: int, body: Any) -> None:
    """Anything that is not Slack refusing the call, and every 5xx, is worth a retry."""
    assert isinstance(classify("chat.update", status, body), Transient)


def test_a_429_with_seconds_is_a_rate_limit_of_that_long() -> None:
    """`Retry-After: 7` means seven seconds."""
    limited = classify("chat.update", 429, {"ok": False, "error": "ratelimited"}, "7")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0


def test_a_429_with_an_http_date_is_a_rate_limit_until_then_clamped() -> None:
    """An HTTP-date `Retry-After` is read as a date; one an hour away is clamped."""
    soon = classify("chat.update", 429, ENVOY, formatdate(time.time() + 30, usegmt=True))
    assert isinstance(soon, RateLimited) and 28.0 <= soon.retry_after <= 30.0
    late = classify("chat.update", 429, {}, formatdate(time.time() + 3600, usegmt=True))
    assert isinstance(late, RateLimited) and late.retry_after == MAX_RETRY_AFTER


@pytest.mark.parametrize("header", [None, "", "soon", "Wed, 99 Foo 2015"])
def test_a_429_without_a_usable_retry_after_waits_one_second(header: str | None) -> None:
    """Missing or unreadable `Retry-After` never crashes the call: one second."""
    limited = classify("chat.postMessage", 429, {}, header)
    assert isinstance(limited, RateLimited) and limited.retry_after == 1.0


def test_ratelimited_with_http_200_is_a_rate_limit() -> None:
    """Slack's HTTP 200 `ratelimited` is a 429 in all but status."""
    assert isinstance(
        classify("chat.update", 200, {"ok": False, "error": "ratelimited"}), RateLimited
    )


@pytest.mark.parametrize(
    ("error", "gone", "auth"),
    [
        ("not_in_channel", True, False),
        ("channel_not_found", True, False),
        ("is_archived", True, False),
        ("invalid_auth", False, True),
        ("token_revoked", False, True),
        ("account_inactive", False, True),
        ("msg_too_long", False, False),
    ],
)
def test_slack_refusals_are_delivery_errors_named_by_class(
    error: str, gone: bool, auth: bool
) -> None:
    """Slack refusing the call itself is final, and says whether the channel or token is bad."""
    failure = classify("chat.postMessage", 200, {"ok": False, "error": error})
    assert isinstance(failure, SlackDeliveryError)
    assert (failure.error, failure.channel_gone, failure.auth_failed) == (error, gone, auth)


def test_connection_failures_and_anything_unexpected_are_transient() -> None:
    """A reset, a timeout, or a foreign exception nobody expected (slack_sdk tripping over a
    text/plain HTTP 200) is retried, bounded by max_attempts; the unexpected one named by type."""
    assert isinstance(translate("chat.update", aiohttp.ServerDisconnectedError()), Transient)
    assert isinstance(translate("chat.update", TimeoutError()), Transient)
    odd = translate("chat.update", AttributeError("'str' object has no attribute 'get'"))
    assert isinstance(odd, Transient) and str(odd) == "unexpected: AttributeError"


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, {"ok": False, "error": "service_unavailable"}), (503, ENVOY), (502, {})],
)
def test_a_5xx_with_retry_after_carries_the_wait_clamped(status: int, body: Any) -> None:
    """A 5xx saying when to come back is transient with that wait (seconds or date, clamped)."""
    told = classify("chat.update", status, body, "7")
    assert isinstance(told, Transient) and told.retry_after == 7.0
    dated = classify("chat.update", status, body, formatdate(time.time() + 3600, usegmt=True))
    assert isinstance(dated, Transient) and dated.retry_after == MAX_RETRY_AFTER
    plain = classify("chat.update", status, body, None)
    assert isinstance(plain, Transient) and plain.retry_after is None


def test_a_retry_after_on_a_refusal_that_is_not_a_5xx_is_no_wait() -> None:
    """`Retry-After` only means "come back then" on a 429 or a 5xx."""
    refused = classify("chat.update", 200, {"ok": False, "error": "internal_error"}, "7")
    assert isinstance(refused, Transient) and refused.retry_after is None


async def test_a_503_with_retry_after_is_retried_after_that_not_after_backoff(
    slack: SlackStandin,
) -> None:
    """A final write answered 503 + `Retry-After: 7` waits 7 s (fake clock), then lands."""
    clock = FakeClock()
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    caller = SlackCaller(client, alerts=OperatorAlerts(clock), clock=clock, sleep=clock.sleep)
    bucket = TokenBucket(100.0, 100.0, clock, clock.sleep)
    slack.inject("chat.postMessage", status=503, headers={"Retry-After": "7"})
    began = clock.now
    await caller.call_reliably("chat.postMessage", bucket, channel="D0WAIT", text="answer")
    first, second = slack.calls_to("chat.postMessage")
    assert (first.status, second.status) == (503, 200)
    assert clock.now - began >= 7.0  # backoff alone would have waited at most 0.75 s
    assert [m.text for m in slack.bot_messages("D0WAIT")] == ["answer"]
