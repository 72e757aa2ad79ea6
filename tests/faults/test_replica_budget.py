"""One Slack budget for all replicas (issue 11): several bots on one Postgres stay inside
Slack's workspace limit together, back off together after a 429, and fall back to a share of
the budget when Postgres cannot be reached.

The bots run in this process, each with its own store and connection pool, against the
rate-limited Slack stand-in; rates are scaled up like the bench does (bench/scale.py)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from bench.scale import TimeScale
from bot.service import Powabot
from bot.slack.budget import Budgets
from bot.slack.calls import RateLimited
from bot.slack.publisher import Publisher
from bot.slack.shared_budget import BUSY_IS_DOWN_AFTER, SharedBudgets
from bot.store.postgres import BUDGET_CONNECTIONS, PostgresStore
from sandbox.pgcluster import PgCluster
from sandbox.slack import SlackStandin
from tests.conftest import bot_settings
from tests.e2e.answers import bot_replies, expected_text

# Slack's limits and the bots' budgets five times faster: a larger factor leaves less room for
# event-loop jitter than the budgets' 10 % margin covers on 2 busy cores.
SCALE = TimeScale(factor=5.0)
REPLICAS = 3
QUESTIONS = 30


@pytest.fixture
async def limited_slack() -> AsyncIterator[SlackStandin]:
    async with SlackStandin(rate_limits=SCALE.standin_limits()) as standin:
        yield standin


@contextlib.asynccontextmanager
async def replicas(
    slack: SlackStandin,
    powabase: Any,
    tmp_path: Path,
    stores: list[str],
    budgets: SharedBudgets | None = None,
) -> AsyncIterator[list[Powabot]]:
    """One started bot per store URL (own store, own pool), all connected to `slack`."""
    bots = []
    try:
        for store in stores:
            settings = bot_settings(
                slack,
                powabase,
                tmp_path,
                POWABOT_STORE=store,
                POWABOT_MAX_REPLICAS=REPLICAS,
                **SCALE.bot_settings(),
            )
            bot = Powabot(settings, budgets=budgets or Budgets(**SCALE.bot_budgets()))
            bots.append(bot)
            await bot.start()
        await slack.wait_for(lambda: slack.hub.num_connections == len(stores), timeout=10)
        yield bots
    finally:
        for bot in bots:
            await bot.stop(grace=5)


async def ask_all(slack: SlackStandin, bots: list[Powabot], numbers: range) -> list[Any]:
    """Questions `numbers` at once, one DM each, in one workspace; returns once all answered."""
    before = sum(b.answerer.finished for b in bots)
    asked = await asyncio.gather(
        *(
            slack.user_says(
                user=f"U0USER{i:03d}", text=f"Question {i}: refunds?", channel=f"D{i:04d}"
            )
            for i in numbers
        )
    )
    done = before + len(numbers)
    await slack.wait_for(lambda: sum(b.answerer.finished for b in bots) >= done, timeout=90)
    return list(asked)


def assert_every_answer_exact(slack: SlackStandin, powabase: Any, asked: list[Any]) -> None:
    """Each question has one answer, the exact final rendering of its upstream answer (and
    nothing else below it but the delegation trace)."""
    by_question = {r.message: r.answer for r in powabase.runs}
    for msg in asked:
        reply, *below = bot_replies(slack, msg.channel, msg.ts)
        question = slack.message(msg.channel, msg.ts).text
        assert reply.text == expected_text(by_question[question])
        # the trace, under its sources line
        assert all(m.text.splitlines()[1].startswith("Delegation trace") for m in below)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_three_replicas_on_one_postgres_share_one_budget_without_a_429(
    limited_slack: SlackStandin,
    powabase: Any,
    tmp_path: Path,
    pg_cluster: PgCluster,
    migrated_db: str,
) -> None:
    """30 answers spread over 3 replicas in one workspace: Slack never answers 429 and every
    answer ends exact (the replicas reserve from one budget in Postgres)."""
    async with replicas(limited_slack, powabase, tmp_path, [migrated_db] * REPLICAS) as bots:
        assert all(isinstance(b.publisher.budgets, SharedBudgets) for b in bots)
        asked = await ask_all(limited_slack, bots, range(QUESTIONS))
        timings = [t for b in bots for t in b.publisher.budgets.timings]  # type: ignore[attr-defined]
        assert not any(b.publisher.budgets.falling_back for b in bots)  # type: ignore[attr-defined]
        answered = [b.answerer.finished for b in bots]
    assert limited_slack.ratelimited_count == 0
    assert_every_answer_exact(limited_slack, powabase, asked)
    assert all(n > 0 for n in answered), answered  # the load really was spread
    cuts = statistics.quantiles(timings, n=100)
    print(  # the coordinator's figure: database time per reservation (one per Slack call)
        f"\nshared budget: {len(timings)} reservations, "
        f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"
    )


async def test_three_replicas_with_budgets_of_their_own_overrun_slack(
    limited_slack: SlackStandin, powabase: Any, tmp_path: Path
) -> None:
    """The same load on 3 replicas each counting only its own calls (SQLite, one budget per
    process) gets 429s from Slack: the contrast the shared budget removes."""
    stores = [f"sqlite:///{tmp_path / f'replica{n}.db'}" for n in range(REPLICAS)]
    async with replicas(limited_slack, powabase, tmp_path, stores) as bots:
        assert all(type(b.publisher.budgets) is Budgets for b in bots)
        await ask_all(limited_slack, bots, range(QUESTIONS))
    assert limited_slack.ratelimited_count > 0


async def test_a_429_on_one_replica_holds_back_the_others(
    slack: SlackStandin, pg_cluster: PgCluster, migrated_db: str
) -> None:
    """Slack's Retry-After on one replica's chat.update makes another replica wait it out too
    before its own chat.update (each replica with its own connection pool)."""
    stores = [PostgresStore(migrated_db) for _ in range(2)]
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    for store in stores:
        await store.open()
    try:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        first, second = (
            Publisher(
                client,
                SharedBudgets(store, Budgets(), max_replicas=2),
                sleep=record if n else asyncio.sleep,
            )
            for n, store in enumerate(stores)
        )
        team = slack.workspace.team_id
        thread = await slack.user_says(user="U0ALICE", text="Refunds?", channel="D0RA")
        posted = await first.caller.call(
            "chat.postMessage",
            first.budgets.posts("D0RA"),
            channel="D0RA",
            thread_ts=thread.ts,
            text="…",
        )
        slack.inject("chat.update", status=429, headers={"Retry-After": "7"})
        with pytest.raises(RateLimited):
            await first.caller.call(
                "chat.update", first.budgets.edits(team), channel="D0RA", ts=posted["ts"], text="a"
            )
        assert sample("powabot_slack_ratelimited_total", method="chat.update") >= 1
        await second.caller.call_reliably(
            "chat.update", second.budgets.edits(team), channel="D0RA", ts=posted["ts"], text="b"
        )
    finally:
        for store in stores:
            await store.close()
    assert len(slept) == 1 and slept[0] >= 7.0  # the other replica's wait, slept locally
    assert bot_replies(slack, "D0RA", thread.ts)[0].text == "b"


class CuttableProxy:
    """A TCP proxy to Postgres on 127.0.0.1 that a test can cut (connections closed, new ones
    refused) and restore on the same port."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_with_postgres_gone_the_budget_falls_back_to_a_share_and_comes_back(
    limited_slack: SlackStandin,
    powabase: Any,
    tmp_path: Path,
    pg_cluster: PgCluster,
    migrated_db: str,
) -> None:
    """The budget's Postgres goes away mid-load: the replica says so once (log, metric 1),
    spends its 1/3 share locally, answers every question exact without a 429; when Postgres
    is back, the next probe ends the fallback (log, metric 0)."""
    proxy = CuttableProxy(pg_cluster.port)
    await proxy.start()
    budget_store = PostgresStore(migrated_db.replace(f":{pg_cluster.port}/", f":{proxy.port}/"))
    await budget_store.open()
    shared = SharedBudgets(
        budget_store, Budgets(**SCALE.bot_budgets()), max_replicas=REPLICAS, probe_every=0.5
    )
    try:
        with capture_logs() as logs:
            async with replicas(
                limited_slack, powabase, tmp_path, [migrated_db], budgets=shared
            ) as (bot,):
                first = await ask_all(limited_slack, [bot], range(5))
                assert not shared.falling_back
                await proxy.cut()
                more = asyncio.ensure_future(ask_all(limited_slack, [bot], range(5, 15)))
                await limited_slack.wait_for(lambda: shared.falling_back, timeout=10)
                assert sample("powabot_budget_fallback_active") == 1
                local = shared.local.edits(limited_slack.workspace.team_id)
                assert local.rate == pytest.approx(shared.base.edits_per_minute / 60 / REPLICAS)
                second = await more
                await proxy.start()  # Postgres is back
                third = await ask_all(limited_slack, [bot], range(15, 20))
                await limited_slack.wait_for(lambda: not shared.falling_back, timeout=10)
    finally:
        await budget_store.close()
        with contextlib.suppress(Exception):
            await proxy.cut()
    events = [e["event"] for e in logs]
    assert events.count("budget_fallback_started") == 1
    assert events.count("budget_fallback_ended") == 1
    assert [e["log_level"] for e in logs if e["event"] == "budget_fallback_started"] == ["error"]
    assert sample("powabot_budget_fallback_active") == 0
    assert limited_slack.ratelimited_count == 0
    assert_every_answer_exact(limited_slack, powabase, [*first, *second, *third])


async def test_a_burst_queueing_for_budget_connections_is_not_taken_for_an_outage(
    pg_cluster: PgCluster, migrated_db: str
) -> None:
    """Every budget connection of a replica busy (a burst of reservations): one that cannot
    get a connection in time goes ahead on the local share, without declaring Postgres down
    (its time is still measured); only when none succeeded for a while does the fallback
    start."""
    store = PostgresStore(migrated_db)
    await store.open()
    now = [0.0]
    shared = SharedBudgets(
        store, Budgets(), max_replicas=REPLICAS, timeout=0.2, clock=lambda: now[0]
    )
    budget = shared.edits("T0BUSY")
    try:
        assert await budget.reserve(max_wait=60) == 0.0
        pool = store._budget_pool
        assert pool is not None
        busy = [await pool.acquire() for _ in range(BUDGET_CONNECTIONS)]
        try:
            assert await budget.reserve(max_wait=60) is not None  # served locally
            assert not shared.falling_back
            assert len(shared.timings) == 2 and shared.timings[1] >= 0.2
            now[0] += BUSY_IS_DOWN_AFTER
            await budget.reserve(max_wait=60)
            assert shared.falling_back
        finally:
            for connection in busy:
                await pool.release(connection)
        now[0] += shared.probe_every
        await budget.reserve(max_wait=60)  # the probe: Postgres answers, fallback over
        assert not shared.falling_back
    finally:
        await store.close()
