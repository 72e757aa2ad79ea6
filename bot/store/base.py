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
class AnswerRecord:
    """One delivered answer, kept for feedback, escalation and export (`answer_log`).

    `reply_ts` is the ts of the answer's last message in Slack (it carries the feedback
    buttons): what a feedback click or a "Talk to a person" click names. Texts are capped at
    `QUESTION_MAX` characters.
    """

    key: ThreadKey  # the conversation (asker, thread)
    reply_ts: str
    run_id: str | None
    question: str
    answer: str
    status: str  # the run's end: done / failed / stopped
    specialists: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # what the answer showed, "Title (KB) <url>" lines
    tokens: int | None = None
    created_at: datetime | None = None  # set by the store


@dataclass(frozen=True)
class Feedback:
    """One rating of one answer by one Slack user (a second click replaces the first)."""

    team_id: str
    channel_id: str
    reply_ts: str  # the rated answer (`AnswerRecord.reply_ts`)
    rater_id: str  # the Slack user who clicked (may differ from the asker)
    rating: int  # 1 (positive) or -1 (negative)


@dataclass(frozen=True)
class Escalation:
    """A conversation handed to a person; the bot stays quiet in its thread until resolved."""

    id: int | None  # set by the store
    key: ThreadKey  # the asker's conversation
    run_id: str | None
    specialist: str | None
    requested_by: str  # Slack user who asked for a person
    channel_id: str  # the escalation channel
    message_ts: str | None = None  # the escalation message there, once posted
    created_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class ExportRow:
    """One rating with everything an admin needs to improve the knowledge bases."""

    rated_at: datetime
    team_id: str
    channel_id: str
    thread_ts: str
    asker_id: str
    rater_id: str
    rating: int
    run_id: str | None
    question: str
    answer: str
    specialists: tuple[str, ...]
    sources: tuple[str, ...]
    tokens: int | None
    escalations: int  # escalations of that conversation


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

    # The support loop (issue 13): answers kept, ratings, escalations, fresh starts, settings.

    async def record_answer(self, record: AnswerRecord) -> None:
        """Keep a delivered answer (upsert on team, channel, reply_ts)."""

    async def get_answer(self, team_id: str, channel_id: str, reply_ts: str) -> AnswerRecord | None:
        """The answer whose message is `reply_ts`; None when unknown or its conversation was
        deleted."""

    async def record_feedback(self, feedback: Feedback) -> bool:
        """Store a rating (the same rater on the same answer replaces theirs); False when the
        answer or its conversation is gone (the rating is dropped)."""

    async def feedback_export(self, *, since: datetime | None = None) -> list[ExportRow]:
        """Every rating (oldest first) with its answer, for `powabot feedback export`."""

    async def open_escalation(self, escalation: Escalation) -> Escalation:
        """Record a hand-over; returns it with its id. An escalation already open in the same
        thread is returned instead (one at a time)."""

    async def set_escalation_message(self, escalation_id: int, message_ts: str) -> None: ...

    async def active_escalation(self, key: ThreadKey) -> Escalation | None:
        """The open escalation of this conversation (the bot stays quiet meanwhile)."""

    async def resolve_escalation(
        self, escalation_id: int, *, resolved_by: str
    ) -> Escalation | None:
        """Close it (first resolver wins); None when unknown or already resolved."""

    async def reset_session(self, key: ThreadKey, agent_session_id: str) -> ChatSession | None:
        """A fresh start: the conversation's current mapping is copied to its history
        (`chat_session_history`) and the thread then maps to `agent_session_id`. None when the
        thread had no conversation yet (nothing to reset)."""

    async def session_history(self, key: ThreadKey) -> list[ChatSession]:
        """Earlier mappings of this conversation, oldest first."""

    async def recent_sessions(
        self, team_id: str, user_id: str, limit: int = 5
    ) -> list[ChatSession]:
        """The user's conversations in that workspace, most recently active first."""

    async def get_workspace_settings(self, team_id: str) -> dict[str, Any] | None:
        """The workspace's admin settings as saved (None: defaults)."""

    async def save_workspace_settings(
        self, team_id: str, settings: dict[str, Any], *, updated_by: str
    ) -> None: ...
