"""The session store interface every backend implements (SQLite, Supabase, Postgres).

The store is the only shared state between bot replicas: the Slack thread → Powabase session map,
the last run of each conversation, the Slack event ids already claimed (dedupe), and the answers
in progress with their leases (`slack_answers`: each Slack message answered once, and finished by
another replica when the one answering it dies).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

TITLE_MAX = 80
EVENT_RETENTION_HOURS = 24
# Every store deletes claimed event ids (and answers done) older than the retention once per
# this many claims.
PRUNE_EVERY = 500
# The longest question text an open answer keeps for a takeover (Slack caps a message at 40k).
QUESTION_MAX = 40_000


@dataclass(frozen=True)
class ThreadKey:
    """One conversation: a Slack user in a Slack thread of one workspace."""

    team_id: str
    channel_id: str
    thread_ts: str
    user_id: str


@dataclass(frozen=True)
class ChatSession:
    key: ThreadKey
    agent_session_id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None
    last_run_status: str | None = None


@dataclass(frozen=True)
class AnswerKey:
    """One Slack message the bot answers: its workspace, channel and ts."""

    team_id: str
    channel_id: str
    message_ts: str


@dataclass(frozen=True)
class AnswerClaim:
    """What a replica claims to answer one Slack message: enough to run the question again."""

    key: AnswerKey
    event_id: str
    user_id: str
    question: str
    thread_ts: str | None = None
    channel_type: str | None = None


@dataclass(frozen=True)
class OpenAnswer:
    """An answer taken over from a replica that died or stopped (a `slack_answers` row)."""

    claim: AnswerClaim
    attempts: int  # claims so far, this takeover included
    reply_ts: str | None  # the reply message the first replica posted, if it got that far
    reply_native: bool  # that message was a native stream (stop it before editing it)


@dataclass(frozen=True)
class StoreHealth:
    backend: str
    reachable: bool
    migrated: bool
    detail: str = ""


def make_title(question: str) -> str:
    """The first question, on one line, shortened to fit a list of conversations."""
    one_line = " ".join(question.split())
    if len(one_line) <= TITLE_MAX:
        return one_line
    return one_line[: TITLE_MAX - 1].rstrip() + "…"


# Random bytes in a minted agent session id: 128 bits, so ids never collide by chance and
# cannot be guessed (Powabase adopts any unknown id as a new session, and anyone holding an id
# can continue that conversation).
SESSION_ID_RANDOM_BYTES = 16


def new_agent_session_id() -> str:
    """A fresh, unguessable id in Powabase's `orch_sess_<hex>` form (32 hex digits here).

    Powabase adopts an unknown id as a new session; the stores refuse an id already mapped to
    another thread (StoreError), so a collision can never merge two conversations.
    """
    return f"orch_sess_{secrets.token_hex(SESSION_ID_RANDOM_BYTES)}"


@runtime_checkable
class SessionStore(Protocol):
    backend: str
    # Several replicas may share this store (Postgres, Supabase): a stopping replica hands its
    # unfinished answers to the others. False for SQLite (one process).
    shared: bool

    async def open(self) -> None:
        """Connect (and for embedded stores, create the schema)."""

    async def close(self) -> None: ...

    async def get_session(self, key: ThreadKey) -> ChatSession | None: ...

    async def reserve_session(
        self, key: ThreadKey, agent_session_id: str, title: str | None
    ) -> ChatSession:
        """Insert the mapping unless one exists; return the row that exists afterwards.

        Two first messages racing in one thread both get the same (winning) row. An
        `agent_session_id` already mapped to another thread raises StoreError (never shared).
        """

    async def set_agent_session_id(self, key: ThreadKey, agent_session_id: str) -> None:
        """Record the id Powabase reported in `start` when it differs from the reserved one.

        StoreError when another thread already has that id; the mapping stays as it was.
        """

    async def record_run(
        self, key: ThreadKey, *, run_id: str | None, status: str, trace: dict[str, Any]
    ) -> None:
        """Remember the last run of a conversation (status + delegation trace), touch updated_at."""

    async def claim_event(self, event_id: str) -> bool:
        """True exactly once per Slack event id across every replica sharing this store."""

    # Answers and their leases (`slack_answers`). `owner` is the replica id; `lease` is in
    # seconds, measured on the store's clock.

    async def claim_answer(self, claim: AnswerClaim, *, owner: str, lease: float) -> bool:
        """True exactly once per Slack message (`claim.key`) across every replica: the caller
        then owns the answer, with a lease of `lease` seconds. A duplicate only records its
        event id."""

    async def renew_leases(
        self, keys: list[AnswerKey], *, owner: str, lease: float
    ) -> set[AnswerKey]:
        """Extend the leases `owner` still holds among `keys`; returns those (a key missing was
        taken over by another replica)."""

    async def set_reply(self, key: AnswerKey, *, owner: str, reply_ts: str, native: bool) -> None:
        """Remember the reply message (placeholder or stream) posted for the answer."""

    async def finish_answer(self, key: AnswerKey, *, owner: str) -> None:
        """The answer is finished: done for good, and its question text forgotten."""

    async def release_answers(self, keys: list[AnswerKey], *, owner: str) -> int:
        """Hand answers `owner` could not finish to the other replicas now (lease expired);
        returns how many were released."""

    async def take_over_answers(self, *, owner: str, lease: float, limit: int) -> list[OpenAnswer]:
        """At most `limit` open answers whose lease expired or was released, now owned by
        `owner` with a fresh lease and one more attempt; never the same row to two callers."""

    async def health(self) -> StoreHealth: ...
