"""Start-up checks of the Slack tokens, before the bot takes any event.

A token Slack refuses for good (revoked, wrong type, wrong workspace...) stops the start with a
`StartupError` whose message is one line naming the variable to fix; slack_sdk's Socket Mode
client would otherwise retry a bad app token forever. Slack being unreachable or failing (5xx,
429, a proxy's error page) is waited out with jittered backoff: the start goes on once Slack
answers, and a SIGTERM meanwhile cancels the wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import SLACK_AUTH_FAILED, SlackDeliveryError, StartupError
from bot.retry import retry_delay
from bot.slack.calls import RateLimited, translate

log = structlog.get_logger(__name__)

# Refusals no retry can fix: the token itself is wrong for this call.
REFUSED_TOKEN = SLACK_AUTH_FAILED | {
    "not_allowed_token_type",  # e.g. the xoxb token given as SLACK_APP_TOKEN
    "invalid_token",
    "missing_scope",  # an app token without connections:write
    "no_permission",
    "team_access_not_granted",
    "ekm_access_denied",
}
BACKOFF = 0.5
MAX_BACKOFF = 15.0


async def _until_answered(
    method: str,
    call: Callable[[], Awaitable[AsyncSlackResponse]],
    *,
    token_name: str,
    variable: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[str, Any]:
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await call()
            return dict(response.data) if isinstance(response.data, dict) else {}
        except Exception as exc:
            failure = translate(method, exc)
        if isinstance(failure, SlackDeliveryError) and failure.error in REFUSED_TOKEN:
            raise StartupError(
                f"Slack refused the {token_name} ({failure.error}): check {variable}"
            ) from None
        retry_after = failure.retry_after if isinstance(failure, RateLimited) else None
        delay = retry_delay(
            attempt, backoff=BACKOFF, max_delay=MAX_BACKOFF, retry_after=retry_after
        )
        log.warning(
            "slack_unavailable_at_startup",
            method=method,
            error=getattr(failure, "error", None) or str(failure),
            attempt=attempt,
            retry_in=round(delay, 2),
        )
        await sleep(delay)


async def check_bot_token(client: AsyncWebClient) -> dict[str, Any]:
    """`auth.test` with the bot token: who the bot is, or StartupError if Slack refuses it."""
    return await _until_answered(
        "auth.test", client.auth_test, token_name="bot token", variable="SLACK_BOT_TOKEN"
    )


async def open_socket_url(client: AsyncWebClient, app_token: str) -> str:
    """`apps.connections.open` with the app token: a WebSocket URL, or StartupError."""
    data = await _until_answered(
        "apps.connections.open",
        lambda: client.apps_connections_open(app_token=app_token),
        token_name="app token",
        variable="SLACK_APP_TOKEN",
    )
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise StartupError("Slack's apps.connections.open answered without a URL")
    return url
