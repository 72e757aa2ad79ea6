"""Slack agent sessions (`agents.sessions.setStatus`): what gives the user a Stop button.

While an answer runs, its thread's session is `processing` (Slack shows Stop; a click arrives as
the `agent_session_stopped` event), and `active` again once the answer is delivered. Best
effort: a refusal never touches the answer. A workspace where Slack does not offer agent
sessions (the method unknown or not allowed there) is not asked again by this process.
"""

from __future__ import annotations

from typing import Literal

import structlog

from bot.errors import SlackDeliveryError
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import RateLimited, SlackCaller, Transient

log = structlog.get_logger(__name__)

SessionStatus = Literal["active", "processing", "suspended", "closed"]
# Not documented: kept well under a Tier 3 method's 50 per minute, per workspace.
SESSIONS_PER_SECOND = 45 / 60
SESSION_BURST = 10.0
# Refusals that mean "no agent sessions here": stop asking for this workspace.
UNSUPPORTED = frozenset(
    {
        "unknown_method",
        "method_not_supported",
        "not_allowed",
        "not_allowed_token_type",
        "missing_scope",
        "feature_not_enabled",
        "agent_view_not_enabled",
    }
)


class AgentSessions:
    """Sets the agent session status of answer threads, through the publisher's caller."""

    def __init__(self, caller: SlackCaller, budgets: BudgetBook) -> None:
        self.caller = caller
        self.budgets = budgets
        self.unsupported: set[str] = set()  # team ids where Slack refused agent sessions

    def _bucket(self, team_id: str) -> Budget:
        return self.budgets.bucket(f"sessions:{team_id}", SESSIONS_PER_SECOND, SESSION_BURST)

    async def set(
        self,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        status: SessionStatus,
        *,
        user_id: str,
    ) -> bool:
        """Set the session status of one thread; whether Slack took it. Never raises."""
        if team_id in self.unsupported:
            return False
        bucket = self._bucket(team_id)
        if not await self.caller.acquire(bucket, max_wait=0.0):
            return False
        try:
            await self.caller.call(
                "agents.sessions.setStatus",
                bucket,
                channel_id=channel_id,
                thread_ts=thread_ts,
                status=status,
                initiator_user_id=user_id,
            )
        except (RateLimited, Transient) as exc:
            log.info("agent_session_status_skipped", status=status, error=type(exc).__name__)
            return False
        except SlackDeliveryError as exc:
            if exc.error in UNSUPPORTED:
                self.unsupported.add(team_id)
                log.info("agent_sessions_unsupported", team=team_id, error=exc.error)
            else:
                log.info("agent_session_status_refused", status=status, error=exc.error)
            return False
        return True
