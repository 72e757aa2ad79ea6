"""Agent session ids: unguessable, in Powabase's form, and unique in an SQLite file written
before the unique index existed."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.store.base import ThreadKey, new_agent_session_id
from bot.store.sqlite import SqliteStore

# The pre-index schema of chat_sessions in SQLite files (what `SqliteStore` created until now).
OLD_SCHEMA = """
create table chat_sessions (
    id integer primary key autoincrement,
    slack_team_id text not null,
    slack_channel_id text not null,
    slack_thread_ts text not null,
    slack_user_id text not null,
    agent_session_id text not null,
    title text,
    last_run_id text,
    last_run_status text,
    last_trace text,
    created_at text not null,
    updated_at text not null,
    unique (slack_team_id, slack_channel_id, slack_thread_ts, slack_user_id)
);
"""


def test_minted_ids_carry_128_random_bits_in_powabase_form() -> None:
    """Each minted id is `orch_sess_` + 32 hex digits (128 bits) and never repeats."""
    ids = [new_agent_session_id() for _ in range(2000)]
    assert all(re.fullmatch(r"orch_sess_[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # Every hex position varies: no fixed version nibble or counter hiding in the id.
    for position in range(len("orch_sess_"), len(ids[0])):
        assert len({i[position] for i in ids}) > 8


async def test_an_old_sqlite_file_with_shared_ids_opens_and_is_repaired(tmp_path: Path) -> None:
    """A file whose threads share ids opens; the oldest keeps its id, the others get new ones."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        for n, (thread, session) in enumerate(
            [("1.1", "orch_sess_shared"), ("1.2", "orch_sess_shared"), ("1.3", "orch_sess_own"),
             ("1.4", "orch_sess_shared")]
        ):  # fmt: skip
            conn.execute(
                "insert into chat_sessions (slack_team_id, slack_channel_id, slack_thread_ts,"
                " slack_user_id, agent_session_id, created_at, updated_at)"
                " values ('T1', 'C1', ?, 'U1', ?, ?, ?)",
                (thread, session, f"2026-01-01T00:00:0{n}+00:00", f"2026-01-01T00:00:0{n}+00:00"),
            )
    conn.close()
    store = SqliteStore(f"sqlite:///{db}")
    await store.open()
    try:
        ids = {}
        for thread in ("1.1", "1.2", "1.3", "1.4"):
            found = await store.get_session(ThreadKey("T1", "C1", thread, "U1"))
            assert found is not None
            ids[thread] = found.agent_session_id
        assert ids["1.1"] == "orch_sess_shared"
        assert ids["1.3"] == "orch_sess_own"
        assert len(set(ids.values())) == 4
        assert re.fullmatch(r"orch_sess_[0-9a-f]{32}", ids["1.2"])
        with pytest.raises(StoreError):
            await store.reserve_session(ThreadKey("T1", "C1", "1.5", "U1"), ids["1.4"], None)
    finally:
        await store.close()
    again = SqliteStore(f"sqlite:///{db}")  # reopening changes nothing more
    await again.open()
    try:
        found = await again.get_session(ThreadKey("T1", "C1", "1.2", "U1"))
        assert found is not None and found.agent_session_id == ids["1.2"]
    finally:
        await again.close()
