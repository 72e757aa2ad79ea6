"""Answers and their leases (`slack_answers`), the same suite on every backend: SQLite, Postgres
direct and Supabase (supabase-py → PostgREST stand-in `/rpc` → sql/009's functions).

A Slack message is claimed once across replicas; the claim holds a lease its owner renews; an
expired or released lease is taken over by exactly one other replica, with what it needs to run
the question again and finish the same reply message; a finished answer forgets the question.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from bot.errors import StoreError
from bot.leases import Leases
from bot.store.base import PRUNE_EVERY, AnswerClaim, AnswerKey, SessionStore
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.store.supabase import SupabaseStore
from tests.store.test_store_contract import Backend, backend, backend_kind, store

__all__ = ["backend", "backend_kind", "store"]  # the contract suite's fixtures

KEY = AnswerKey("T1", "D1", "1700000000.000100")
CLAIM = AnswerClaim(
    KEY, "Ev01", "U1", "What is the refund window?", thread_ts=None, channel_type="im"
)
LIVE = 60.0  # seconds: a lease that will not expire during a test
EXPIRED = 0.0  # a lease already over by the next statement


def claim_for(ts: str, event_id: str = "Ev01", **changes: Any) -> AnswerClaim:
    values: dict[str, Any] = {
        "key": AnswerKey(KEY.team_id, KEY.channel_id, ts),
        "event_id": event_id,
        "user_id": "U1",
        "question": f"question {ts}",
        "thread_ts": None,
        "channel_type": "im",
    }
    values.update(changes)
    return AnswerClaim(**values)


async def stored_question(store: SessionStore, key: AnswerKey) -> Any:
    """The raw `question` column of an answer, read through the store's own connection."""
    args = (key.team_id, key.channel_id, key.message_ts)
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            row = conn.execute(
                "select question from slack_answers where team_id=? and channel_id=?"
                " and message_ts=?",
                args,
            ).fetchone()
        return row[0]
    if isinstance(store, PostgresStore):
        return await store.pool.fetchval(
            "select question from slack_answers where team_id=$1 and channel_id=$2"
            " and message_ts=$3",
            *args,
        )
    assert isinstance(store, SupabaseStore)
    response = await (
        store.client.table("slack_answers")
        .select("question")
        .eq("team_id", key.team_id)
        .eq("channel_id", key.channel_id)
        .eq("message_ts", key.message_ts)
        .execute()
    )
    return response.data[0]["question"]


async def test_a_message_is_claimed_once_whatever_event_carries_it(store: SessionStore) -> None:
    """The first event of a message claims it; a `message` + `app_mention` pair or a retry
    with a new event id is the same answer; another message is another answer."""
    assert await store.claim_answer(CLAIM, owner="r1", lease=LIVE) is True
    assert await store.claim_answer(CLAIM, owner="r2", lease=LIVE) is False
    other_event = claim_for(KEY.message_ts, event_id="Ev02")
    assert await store.claim_answer(other_event, owner="r2", lease=LIVE) is False
    assert await store.claim_answer(claim_for("1700000000.000200"), owner="r2", lease=LIVE)


async def test_concurrent_claims_of_one_message_have_one_winner(backend: Backend) -> None:
    """The same message delivered to two replicas at once (as several events) is answered by
    exactly one of them."""
    replicas = [await backend.replica(), await backend.replica()]
    results = await asyncio.gather(
        *(
            replicas[i % 2].claim_answer(
                claim_for(KEY.message_ts, event_id=f"Ev{i}"), owner=f"r{i % 2}", lease=LIVE
            )
            for i in range(10)
        )
    )
    assert sorted(results) == [False] * 9 + [True]


async def test_a_live_lease_is_never_taken_over(backend: Backend) -> None:
    """While its owner's lease runs (claimed, or renewed after it had expired), no other
    replica takes the answer."""
    owner, other = await backend.replica(), await backend.replica()
    await owner.claim_answer(CLAIM, owner="r1", lease=LIVE)
    short = claim_for("1700000000.000200")
    await owner.claim_answer(short, owner="r1", lease=EXPIRED)
    renewed = await owner.renew_leases([short.key], owner="r1", lease=LIVE)
    assert renewed == {short.key}
    assert await other.take_over_answers(owner="r2", lease=LIVE, limit=10) == []


async def test_an_expired_lease_is_taken_over_with_the_question_and_the_reply(
    backend: Backend,
) -> None:
    """A replica that died mid-answer (lease expired): another takes it over with everything
    needed to run it again and finish the same Slack message; the dead owner cannot renew it."""
    dead, survivor = await backend.replica(), await backend.replica()
    claim = claim_for(KEY.message_ts, thread_ts="1699999999.000001", channel_type="channel")
    await dead.claim_answer(claim, owner="r1", lease=EXPIRED)
    await dead.claim_answer(
        claim_for(KEY.message_ts, event_id="Ev02"), owner="r3", lease=LIVE
    )  # a duplicate event: no new owner
    await dead.set_reply(KEY, owner="r1", reply_ts="1700000000.000900", native=True)
    (taken,) = await survivor.take_over_answers(owner="r2", lease=LIVE, limit=10)
    assert taken.claim == claim
    assert (taken.attempts, taken.reply_ts, taken.reply_native) == (2, "1700000000.000900", True)
    assert await dead.renew_leases([KEY], owner="r1", lease=LIVE) == set()
    assert await survivor.renew_leases([KEY], owner="r2", lease=LIVE) == {KEY}
    assert await survivor.take_over_answers(owner="r3", lease=LIVE, limit=10) == []


async def test_a_released_answer_is_taken_over_at_once(backend: Backend) -> None:
    """A stopping replica releases what it could not finish: no wait for its lease to end."""
    stopping, other = await backend.replica(), await backend.replica()
    await stopping.claim_answer(CLAIM, owner="r1", lease=LIVE)
    assert await stopping.release_answers([KEY], owner="r2") == 0  # not theirs to release
    assert await stopping.release_answers([KEY], owner="r1") == 1
    (taken,) = await other.take_over_answers(owner="r2", lease=LIVE, limit=10)
    assert (taken.claim.key, taken.attempts, taken.reply_ts) == (KEY, 2, None)


async def test_a_finished_answer_is_never_run_again_and_forgets_the_question(
    backend: Backend,
) -> None:
    """Done is final: no takeover, no renewal, no second claim, and the user's text is gone."""
    store = await backend.replica()
    await store.claim_answer(CLAIM, owner="r1", lease=EXPIRED)
    assert await stored_question(store, KEY) == CLAIM.question
    await store.finish_answer(KEY, owner="r1")
    assert await stored_question(store, KEY) is None
    assert await store.take_over_answers(owner="r2", lease=LIVE, limit=10) == []
    assert await store.renew_leases([KEY], owner="r1", lease=LIVE) == set()
    assert await store.claim_answer(CLAIM, owner="r2", lease=LIVE) is False


async def test_only_the_owner_finishes_or_records_the_reply(backend: Backend) -> None:
    """A replica that lost the answer to another cannot mark it done or change its reply."""
    store = await backend.replica()
    await store.claim_answer(CLAIM, owner="r1", lease=EXPIRED)
    assert len(await store.take_over_answers(owner="r2", lease=EXPIRED, limit=10)) == 1
    await store.finish_answer(KEY, owner="r1")
    await store.set_reply(KEY, owner="r1", reply_ts="1700000000.000555", native=False)
    (again,) = await store.take_over_answers(owner="r3", lease=LIVE, limit=10)
    assert (again.attempts, again.reply_ts) == (3, None)


async def test_concurrent_takeovers_take_each_answer_once(backend: Backend) -> None:
    """Replicas scanning at the same time never take the same answer, and a scan takes at most
    its limit."""
    replicas = [await backend.replica() for _ in range(3)]
    stamps = [f"1700000000.{i:06d}" for i in range(1, 13)]
    for ts in stamps:
        await replicas[0].claim_answer(claim_for(ts), owner="dead", lease=EXPIRED)
    batches = await asyncio.gather(
        *(replicas[i % 3].take_over_answers(owner=f"r{i}", lease=LIVE, limit=3) for i in range(6))
    )
    taken = [answer.claim.key.message_ts for batch in batches for answer in batch]
    assert all(len(batch) <= 3 for batch in batches)
    assert sorted(taken) == stamps


# Leases (bot/leases.py) over a store that fails in a given way: SQLite with one fault.


class HangingFinish(SqliteStore):
    """A store whose `finish_answer` never answers (a stuck connection)."""

    async def finish_answer(self, key: AnswerKey, *, owner: str) -> None:
        await asyncio.Event().wait()


class ClaimFailsAfterCommit(SqliteStore):
    """A store whose claim is written, and then the answer is lost (a timeout after commit)."""

    async def claim_answer(self, claim: AnswerClaim, *, owner: str, lease: float) -> bool:
        await super().claim_answer(claim, owner=owner, lease=lease)
        raise StoreError("connection lost after commit")


async def never_taken_over(other: SessionStore, seconds: float) -> None:
    """Another replica's scan finds nothing to take over for `seconds` (polled)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        assert await other.take_over_answers(owner="other", lease=LIVE, limit=10) == []
        await asyncio.sleep(0.05)


async def test_a_store_stuck_finishing_answers_does_not_hold_renewals_back(
    tmp_path: Path,
) -> None:
    """Answers delivered whose `finish` hangs do not starve the renewal of the answer still
    running: no other replica can take it over, lease after lease."""
    db = tmp_path / "leases.db"
    store, other = HangingFinish(f"sqlite:///{db}"), SqliteStore(f"sqlite:///{db}")
    await store.open()
    await other.open()
    leases = Leases(store, owner="r1", lease=1.0, write_timeout=0.2)
    try:
        stamps = [f"1700000000.{n:06d}" for n in range(9)]
        for ts in stamps:
            assert await leases.claim(claim_for(ts))
        delivered = [claim_for(ts).key for ts in stamps[:8]]  # their finish hangs: untold
        await asyncio.gather(*(leases.finished(key) for key in delivered))
        leases.start(lambda answer: None, lambda: 0)
        await never_taken_over(other, 3.0)  # three leases
        assert leases.held == {claim_for(ts).key for ts in stamps}
    finally:
        await leases.stop()
        await store.close()
        await other.close()


async def test_a_claim_whose_answer_was_lost_after_commit_keeps_its_lease(
    tmp_path: Path,
) -> None:
    """The claim was written but the store's answer was lost: the replica answers it and
    keeps its lease alive, so no other replica takes it over and posts a second answer."""
    db = tmp_path / "leases.db"
    store, other = ClaimFailsAfterCommit(f"sqlite:///{db}"), SqliteStore(f"sqlite:///{db}")
    await store.open()
    await other.open()
    leases = Leases(store, owner="r1", lease=1.0)
    try:
        assert await leases.claim(CLAIM) is True
        leases.start(lambda answer: None, lambda: 0)
        await never_taken_over(other, 2.5)
        await leases.finished(KEY)
        assert await other.take_over_answers(owner="other", lease=LIVE, limit=10) == []
        assert await stored_question(other, KEY) is None  # done
    finally:
        await leases.stop()
        await store.close()
        await other.close()


async def test_a_failing_prune_does_not_fail_the_claim(migrated_db: str) -> None:
    """The occasional clean-up on the claim path fails (here: its function is gone): the
    claim itself still happens (Postgres direct)."""
    store = PostgresStore(migrated_db)
    await store.open()
    try:
        await store.pool.execute("drop function public.prune_slack_answers(interval)")
        store._claims = PRUNE_EVERY - 1  # the next claim prunes first
        assert await store.claim_answer(CLAIM, owner="r1", lease=LIVE) is True
        assert await store.claim_answer(CLAIM, owner="r2", lease=LIVE) is False
    finally:
        await store.close()
