"""An answer's progress as the thread's assistant status (assistant.threads.setStatus).

While an answer has no text yet, what it is doing ("Asking the billing specialist…") shows as
the thread's status, with the line itself as the one `loading_messages` entry: no message is
posted and no `chat.update` budget is spent. Slack clears the status when the app replies in
the thread, or after 2 minutes; `due` asks for a refresh well before that.

setStatus accepts `chat:write` (since 2026-03-05) and works in DMs and channel threads; its rate
limit is not documented, so it gets a generous bucket of its own per workspace
(`status:<team>`), spent only by the best-effort updates. The first status of an answer is
the bot's first write for it, and says whether the bot can write there at all: it is tried
once, at once, and a gone channel or a bad token raises like a refused placeholder would.
"""

from __future__ import annotations

import math

import structlog

from bot.errors import SlackDeliveryError
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import Clock, RateLimited, SlackCaller, Transient

log = structlog.get_logger(__name__)

METHOD = "assistant.threads.setStatus"
# Shown after the app's name ("powabot is working on your question…"); Slack may show its own.
STATUS = "is working on your question…"
# Not documented: a generous guess, under Tier 4's 100+/min; a refused update is only skipped.
STATUS_PER_SECOND = 100 / 60
STATUS_BURST = 20.0
REFRESH_AFTER = 90.0  # seconds: Slack clears a status after 2 minutes


class ThreadStatus:
    """The assistant status of one answer's thread.

    `refused`: the answer's first status was refused (not a gone channel, not a bad token): the
    caller shows its progress another way (a placeholder message). `gone`: a later status was
    refused because the bot cannot write to the channel any more (never raised from there).
    `calls`: setStatus calls made.
    """

    def __init__(
        self,
        caller: SlackCaller,
        budgets: BudgetBook,
        team_id: str,
        channel: str,
        thread_ts: str,
        *,
        clock: Clock,
    ) -> None:
        self.caller = caller
        self.budgets = budgets
        self.team_id = team_id
        self.channel = channel
        self.thread_ts = thread_ts
        self.clock = clock
        self.refused = False
        self.gone: SlackDeliveryError | None = None
        self.calls = 0
        self._shown: str | None = None
        self._shown_at = -math.inf

    @property
    def bucket(self) -> Budget:
        return self.budgets.bucket(f"status:{self.team_id}", STATUS_PER_SECOND, STATUS_BURST)

    def due(self, text: str) -> bool:
        """`text` is not what shows, or what shows is old enough for Slack to clear it soon."""
        return text != self._shown or self.clock() - self._shown_at >= REFRESH_AFTER

    def refresh_in(self) -> float:
        """Seconds until what shows needs refreshing (0: now)."""
        return max(0.0, self._shown_at + REFRESH_AFTER - self.clock())

    async def show(self, text: str, *, first: bool = False) -> bool:
        """Show `text` as the thread's status; whether Slack accepted it.

        `first` (the answer's start): tried once, without waiting for budget. A gone channel or
        a bad token raises SlackDeliveryError (`.channel_gone` / `.auth_failed`: the question
        must not be run); any other failure sets `refused` and returns False. Later calls are
        best effort: skipped when the workspace's status budget is empty, the token is known
        bad, or the first one was refused; never raise.
        """
        if first:
            await self.caller.acquire(self.bucket, max_wait=0.0)  # a token if there is one
            try:
                await self._call(text)
            except SlackDeliveryError as exc:
                if exc.channel_gone or exc.auth_failed:
                    raise
                log.info("slack_status_refused", error=exc.error)
                self.refused = True
                return False
            except (RateLimited, Transient) as exc:
                log.info("slack_status_not_shown", error=str(exc))
                self.refused = True
                return False
            return True
        if self.refused or self.gone is not None or self.caller.alerts.blocked("slack"):
            return False
        if not await self.caller.acquire(self.bucket, max_wait=0.0):
            return False
        try:
            await self._call(text)
        except SlackDeliveryError as exc:
            if exc.channel_gone:
                log.warning("slack_channel_gone_mid_answer", method=exc.method, error=exc.error)
                self.gone = exc
            else:
                log.warning("slack_status_failed", error=exc.error)
            return False
        except (RateLimited, Transient) as exc:
            log.info("slack_status_not_shown", error=str(exc))
            return False
        return True

    async def _call(self, text: str) -> None:
        self.calls += 1
        await self.caller.call(
            METHOD,
            self.bucket,
            channel_id=self.channel,
            thread_ts=self.thread_ts,
            status=STATUS,
            loading_messages=[text],
        )
        self._shown, self._shown_at = text, self.clock()
