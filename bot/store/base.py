"""The session store interface every backend implements (SQLite, Supabase, Postgres).

The store is the only shared state between bot replicas: the Slack thread → Powabase session map,
the last run of each conversation, and the Slack event ids already claimed (dedupe).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

TITLE_MAX = 80
EVENT_RETENTION_HOURS = 24
# Every store deletes claimed event ids older than the retention once per this many claims.
PRUNE_EVERY = 500


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

    async def health(self) -> StoreHealth: ...
