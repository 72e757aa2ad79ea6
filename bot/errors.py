"""The errors powabot raises, one small tree.

    PowabotError
    ├── ConfigError               settings missing or invalid (exit code 2, no traceback)
    ├── StartupError              a permanent start-up failure, e.g. Slack refused a token (exit 1)
    ├── UpstreamError             the Powabase API failed us
    │   ├── UpstreamStatusError   non-2xx answer (carries status + body excerpt)
    │   ├── UpstreamConnectError  could not connect (DNS, refused, TLS)
    │   ├── UpstreamTimeoutError  no answer / no event within the timeout
    │   ├── UpstreamStreamError   the stream broke, sent an oversize frame, or ended early
    │   └── UpstreamRunError      the run failed (`error` event, `complete` not completed)
    ├── SlackDeliveryError        a Slack write failed for good (after retries)
    ├── StoreError                the session store is unreachable or not migrated
    │   └── StoreBusy             its pool had no free connection in time (busy, not down)
    └── ProvisioningError         an admin's spec, file or provisioning call failed

Foreign exceptions (httpx, httpx-sse, slack_sdk, sqlite3, asyncpg, postgrest) are translated
into these at the one place that calls the foreign library, always with ``raise ... from exc``.
"""

from __future__ import annotations


class PowabotError(Exception):
    """Base class of every error powabot raises on purpose."""


class ConfigError(PowabotError):
    """Settings are missing or invalid; ``problems`` names every bad variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class StartupError(PowabotError):
    """The bot cannot start and retrying will not help (Slack refused a token); one line."""


class UpstreamError(PowabotError):
    """The Powabase API could not give us a (complete) answer."""


class UpstreamStatusError(UpstreamError):
    """Powabase answered with a non-2xx status before the stream started."""

    def __init__(self, status: int, body_excerpt: str, url: str = "") -> None:
        self.status = status
        self.body_excerpt = body_excerpt
        self.url = url
        super().__init__(f"Powabase answered HTTP {status} for {url}: {body_excerpt}")


class UpstreamConnectError(UpstreamError):
    """Powabase could not be reached at all."""


class UpstreamTimeoutError(UpstreamError):
    """Powabase did not answer, or went silent mid-stream, for longer than the timeout."""


class UpstreamStreamError(UpstreamError):
    """The event stream broke off, sent a frame past the size cap, or ended without `complete`."""


class UpstreamRunError(UpstreamError):
    """The run reported a failure: an `error` event, or `complete` with a status other than
    "completed" (failed, cancelled, timeout, …)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


# Slack error codes by what they mean for an answer (see ../shared/slack-notes.md).
# The reply cannot go to this channel at all: do not run the question upstream.
SLACK_CHANNEL_GONE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
# The bot's credentials are bad: an operator must act; retrying only makes a storm.
SLACK_AUTH_FAILED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
# The message cannot be edited (any more): post the content as a new message instead.
SLACK_EDIT_REFUSED = frozenset(
    {"msg_too_long", "edit_window_closed", "cant_update_message", "message_not_found"}
)


class SlackDeliveryError(PowabotError):
    """A Slack write call failed for good, after the retries it deserved."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"Slack {method} failed: {error}")

    @property
    def channel_gone(self) -> bool:
        """The bot cannot write to this channel (not a member, deleted, archived)."""
        return self.error in SLACK_CHANNEL_GONE

    @property
    def auth_failed(self) -> bool:
        """The bot token is invalid, revoked or its account deactivated."""
        return self.error in SLACK_AUTH_FAILED


class StoreError(PowabotError):
    """The session store is unreachable, misconfigured or not migrated."""


class StoreBusy(StoreError):
    """Every connection of a store pool stayed in use past the wait allowed: the store is
    busy, not necessarily down (the shared Slack budget does not fall back on this alone)."""


class ProvisioningError(PowabotError):
    """An admin's spec, seed file or provisioning API call failed; the message names which."""
