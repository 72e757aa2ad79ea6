"""The one rule that classes every failed Slack call (bot/slack/calls.py), tested as data."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from bot.errors import SlackDeliveryError
from bot.retry import MAX_RETRY_AFTER
from bot.slack.calls import RateLimited, Transient, classify, translate

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


def test_connection_failures_are_transient_and_anything_else_is_named_unexpected() -> None:
    """A reset or timeout is retried; a foreign exception nobody expected is final, by type."""
    assert isinstance(translate("chat.update", aiohttp.ServerDisconnectedError()), Transient)
    assert isinstance(translate("chat.update", TimeoutError()), Transient)
    odd = translate("chat.update", KeyError("ts"))
    assert isinstance(odd, SlackDeliveryError) and odd.error == "unexpected: KeyError"
