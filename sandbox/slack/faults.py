"""Faults the Slack stand-in can inject into its Web API answers, one call at a time or at random.

What real Slack, and the proxies in front of it, answer when things go wrong:

- Slack's JSON errors, HTTP 200 ``{"ok": false, "error": code}``: ``invalid_auth``,
  ``not_in_channel``, ``msg_too_long``, even ``ratelimited`` (``SlackStandin.inject(error=...)``).
- 429 + ``Retry-After`` in seconds (``inject(status=429)``) or as an HTTP date
  (``fault="retry_after_date"``).
- A proxy's page instead of Slack's JSON: Envoy's plain-text 503 "upstream connect error or
  disconnect/reset before headers ..." (``fault="plain_5xx"``), a load balancer's HTML 502
  (``fault="html_5xx"``).
- A connection closed without an answer (``fault="reset"``), and a slow answer
  (``fault="slow"``: the call goes through after ``delay`` seconds).
- A text/plain page with HTTP 200 (``fault="plain_200"``: a proxy or captive portal answering
  in Slack's place; slack_sdk's own response check trips over it).
- An ambiguous failure (``fault="reset_after_apply"``): the call takes effect, then the
  connection is closed before the answer, as when a response is lost on the way back.

`Chaos` picks among the transient ones at random, with a seeded generator, for load runs.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Literal

Fault = Literal[
    "plain_5xx", "html_5xx", "retry_after_date", "reset", "slow", "plain_200", "reset_after_apply"
]
# The faults `Chaos` draws from (the ones added later are only injected on purpose).
FAULTS: tuple[Fault, ...] = ("plain_5xx", "html_5xx", "retry_after_date", "reset", "slow")

ENVOY_503 = (
    "upstream connect error or disconnect/reset before headers. "
    "reset reason: connection termination"
)
PLAIN_200 = "Service is busy. Please retry your request."
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
# What `Chaos` draws from: every fault a retry must get through (not the permanent ones).
CHAOS_KINDS = ("ratelimited_429", "ratelimited_200", *FAULTS)
# The write methods chaos hits by default (reads and Socket Mode stay healthy).
WRITE_METHODS = frozenset(
    {
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    }
)


@dataclass
class Reply:
    """One Web API answer as the stand-in sends it (or not: `reset` closes the connection)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    injected: bool = False
    raw: str | None = None  # a non-JSON body, sent as is with `content_type`
    content_type: str = "application/json"
    reset: bool = False

    @property
    def error(self) -> str | None:
        if self.reset:
            return "connection_reset"
        if self.raw is not None:
            return f"non_json_{self.status}"
        return None if self.body.get("ok") else str(self.body.get("error"))


@dataclass
class Injection:
    """The answer to the next `remaining` calls of one method."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    remaining: int
    fault: Fault | None = None
    delay: float = 0.0  # seconds to wait before answering
    retry_after: float = 1.0  # for retry_after_date: seconds ahead the date lies

    @property
    def applies_call(self) -> bool:
        """The call itself goes through (`slow`, `reset_after_apply`)."""
        return self.fault in ("slow", "reset_after_apply")

    def reply(self) -> Reply | None:
        """The injected answer; None when the call should go through (`slow`, and
        `reset_after_apply`, whose answer the server then replaces with a reset)."""
        if self.applies_call:
            return None
        if self.fault == "plain_200":
            return Reply(200, {}, injected=True, raw=PLAIN_200, content_type="text/plain")
        if self.fault == "reset":
            return Reply(0, {}, injected=True, reset=True)
        if self.fault == "plain_5xx":
            return Reply(self.status, {}, injected=True, raw=ENVOY_503, content_type="text/plain")
        if self.fault == "html_5xx":
            return Reply(self.status, {}, injected=True, raw=HTML_502, content_type="text/html")
        headers = dict(self.headers)
        if self.fault == "retry_after_date":
            # HTTP dates have whole seconds: round up, so the wait is at least `retry_after`.
            headers["Retry-After"] = formatdate(
                math.ceil(time.time() + self.retry_after), usegmt=True
            )
        return Reply(self.status, self.body, headers, injected=True)


def default_status(fault: Fault | None) -> int:
    """The HTTP status a fault comes with when the test names none."""
    if fault == "plain_5xx":
        return 503
    if fault == "html_5xx":
        return 502
    if fault == "retry_after_date":
        return 429
    return 200


@dataclass
class Chaos:
    """Each call of a chosen method fails, with probability `rate`, in a randomly chosen way.

    Seeded: the same seed and the same sequence of calls give the same faults.
    """

    rate: float
    seed: int | None = None
    methods: frozenset[str] = WRITE_METHODS
    kinds: tuple[str, ...] = CHAOS_KINDS
    slow: float = 0.5  # seconds a `slow` answer takes
    retry_after: float = 1.0  # seconds a 429 asks for (as a number or as a date)
    counts: dict[str, int] = field(default_factory=dict)  # faults served, by kind
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"chaos rate must be within [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(CHAOS_KINDS)
        if unknown:
            raise ValueError(f"unknown chaos kinds {sorted(unknown)}; known: {CHAOS_KINDS}")
        self._random = random.Random(self.seed)

    def draw(self, method: str) -> Injection | None:
        """A one-call injection for this call of `method`, or None to answer it normally."""
        if method not in self.methods or self._random.random() >= self.rate:
            return None
        kind = self._random.choice(self.kinds)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        limited = {"ok": False, "error": "ratelimited"}
        if kind == "ratelimited_429":
            seconds = str(max(1, math.ceil(self.retry_after)))
            return Injection(429, limited, {"Retry-After": seconds}, 1)
        if kind == "ratelimited_200":
            return Injection(200, limited, {}, 1)
        fault = next(f for f in FAULTS if f == kind)
        status = default_status(fault)
        delay = self.slow if fault == "slow" else 0.0
        return Injection(status, limited, {}, 1, fault, delay, self.retry_after)
