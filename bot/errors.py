"""The errors powabot raises, one small tree.

    PowabotError
    ├── ConfigError               settings missing or invalid (exit code 2, no traceback)
    ├── UpstreamError             the Powabase API failed us
    │   ├── UpstreamStatusError   non-2xx answer (carries status + body excerpt)
    │   ├── UpstreamConnectError  could not connect (DNS, refused, TLS)
    │   ├── UpstreamTimeoutError  no answer / no event within the timeout
    │   ├── UpstreamStreamError   the stream broke or ended without `complete`
    │   └── UpstreamRunError      the run itself failed (`error` event, `complete` with failed)
    ├── SlackDeliveryError        a Slack write failed for good (after retries)
    ├── StoreError                the session store is unreachable or not migrated
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
    """The event stream broke off, or ended without a `complete` event."""


class UpstreamRunError(UpstreamError):
    """The orchestration run reported a failure (`error` event or failed `complete`)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class SlackDeliveryError(PowabotError):
    """A Slack write call failed for good, after the retries it deserved."""

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error
        super().__init__(f"Slack {method} failed: {error}")


class StoreError(PowabotError):
    """The session store is unreachable, misconfigured or not migrated."""


class ProvisioningError(PowabotError):
    """An admin's spec, seed file or provisioning API call failed; the message names which."""
