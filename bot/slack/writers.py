"""What the small Slack writers share (`AssistantWriter`, feedback's `EphemeralWriter`,
`SupportWriter`): the publisher's caller and budgets, a workspace's Tier-4 budget, one
best-effort call, and the arguments of a plain reply in a thread and of an ephemeral message.
"""

from __future__ import annotations

from typing import Any

import structlog

from bot.errors import SlackDeliveryError
from bot.render.message import SlackMessage
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient

log = structlog.get_logger(__name__)

CALL_WAIT = 2.0  # seconds a best-effort call may wait for its budget before it is skipped
# Tier 4 (100+ per minute per workspace): assistant.threads.*, chat.postEphemeral,
# chat.getPermalink.
TIER4_PER_SECOND = 100 / 60
TIER4_BURST = 5.0


def failure(exc: RateLimited | Transient | SlackDeliveryError) -> str:
    """A failed call as logged: Slack's error code, else the kind of failure."""
    return exc.error if isinstance(exc, SlackDeliveryError) else type(exc).__name__


def reply_args(channel_id: str, thread_ts: str, text: str) -> dict[str, Any]:
    """chat.postMessage arguments of a plain-text message in a thread (links never unfurl)."""
    return {
        "channel": channel_id,
        "thread_ts": thread_ts,
        "text": text,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def ephemeral_args(
    channel_id: str, user_id: str, message: SlackMessage, thread_ts: str | None
) -> dict[str, Any]:
    """chat.postEphemeral arguments: `message` for `user_id` only, in the thread when given."""
    args: dict[str, Any] = {"channel": channel_id, "user": user_id, "text": message.text}
    if message.blocks is not None:
        args["blocks"] = message.blocks
    if thread_ts:
        args["thread_ts"] = thread_ts
    return args


class SlackWriter:
    """Slack writes through the publisher's caller and budgets."""

    def __init__(self, caller: SlackCaller, budgets: BudgetBook) -> None:
        self.caller = caller
        self.budgets = budgets

    def _tier4(self, kind: str, team_id: str) -> Budget:
        return self.budgets.bucket(f"{kind}:{team_id}", TIER4_PER_SECOND, TIER4_BURST)

    async def _try(self, method: str, bucket: Budget, *, event: str, **args: Any) -> bool:
        """Best effort: waits at most `CALL_WAIT` for the budget, is tried once, answers whether
        Slack took it; a skip or failure is logged (`{event}_skipped`, `{event}_failed`), never
        raised."""
        try:
            if not await self.caller.acquire(bucket, max_wait=CALL_WAIT):
                log.info(f"{event}_skipped", method=method, reason="budget")
                return False
            await self.caller.call(method, bucket, **args)
        except (RateLimited, Transient, SlackDeliveryError) as exc:
            log.info(f"{event}_failed", method=method, error=failure(exc))
            return False
        return True
