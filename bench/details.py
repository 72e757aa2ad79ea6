"""The run details the bot reads for an answer's sources, fetched from the Powabase stand-in the
way the bot fetches them (`GET /api/orchestrations/runs/{run_id}`), so the expected answer can
name the same sources (see `bench.expected.replay`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp

from bench.expected import complete_written
from sandbox.powabase import PowabaseStandin, RunRecord

AT_ONCE = 16  # detail requests in flight at the same time
TIMEOUT_S = 10.0


class RunDetails:
    """Run details by run id, each fetched once (a finished run's detail does not change)."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}

    async def fetch(self, powabase: PowabaseStandin, runs: Sequence[RunRecord]) -> dict[str, Any]:
        """Fetch the details of the finished runs not fetched yet; return every detail known
        (a run whose detail the stand-in did not give is left out: its answer is expected
        without sources)."""
        wanted = [
            r.run_id
            for r in runs
            if r.run_id
            and r.run_id not in self.found
            and (r.status == "completed" or complete_written(r))
        ]
        if not wanted:
            return self.found
        headers = {"apikey": powabase.api_key, "Authorization": f"Bearer {powabase.api_key}"}
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        gate = asyncio.Semaphore(AT_ONCE)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

            async def one(run_id: str) -> None:
                url = f"{powabase.url}/api/orchestrations/runs/{run_id}"
                async with gate, session.get(url) as response:
                    if response.status == 200:
                        self.found[run_id] = await response.json()

            await asyncio.gather(*(one(run_id) for run_id in wanted))
        return self.found
