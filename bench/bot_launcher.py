"""Runs in the PARENT (the bench): starts the bot's child process, asks it, stops it.

What runs inside that child is `bench/bot_child.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

SCRUBBED_PREFIXES = ("SLACK_", "POWABASE_", "POWABOT_", "SUPABASE_")
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
REPO = Path(__file__).resolve().parent.parent


class BotProcessError(RuntimeError):
    """The bot child process died, said something unexpected, or did not answer in time."""


def child_env(settings: dict[str, str]) -> dict[str, str]:
    """The parent's environment without Slack/Powabase settings or proxies, plus `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SCRUBBED_PREFIXES) and k not in PROXY_VARS
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(settings)
    return env


class BotProcess:
    """One `python -m bench.bot_child` child; its stderr (JSON logs) goes to `log_path`."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, log_file: Any) -> None:
        self.proc = proc
        self.log_path = log_path
        self._log_file = log_file
        self.ready: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        settings: dict[str, str],
        budgets: dict[str, float],
        log_path: Path,
        *,
        lag_interval: float = 0.02,
        slow_callback: float = 0.0,
        timeout: float = 30.0,  # noqa: ASYNC109 (a start-up deadline, not a cancel scope)
    ) -> BotProcess:
        log_file = log_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bot_child",
            "--budgets",
            json.dumps(budgets),
            "--lag-interval",
            str(lag_interval),
            "--slow-callback",
            str(slow_callback),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            cwd=str(REPO),
            env=child_env(settings),
        )
        handle = cls(proc, log_path, log_file)
        try:
            handle.ready = await handle._read(timeout)
        except BaseException:
            await handle.kill()
            raise
        return handle

    async def _read(self, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BotProcessError(
                f"bot process silent for {timeout}s; see {self.log_path}"
            ) from None
        if not line:
            code = await self.proc.wait()
            raise BotProcessError(f"bot process exited with {code}; see {self.log_path}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BotProcessError(f"bot process printed non-JSON: {line[:200]!r}") from exc
        if "error" in message:
            raise BotProcessError(f"bot process: {message['error']}")
        return dict(message)

    async def request(self, command: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Send one command line and read its one-line JSON answer."""
        assert self.proc.stdin is not None
        async with self._lock:
            if self.proc.returncode is not None:
                raise BotProcessError(f"bot process already exited ({self.proc.returncode})")
            self.proc.stdin.write(command.encode() + b"\n")
            await self.proc.stdin.drain()
            return await self._read(timeout)

    async def stats(self) -> dict[str, Any]:
        return await self.request("stats")

    async def stop(self, timeout: float = 60.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Ask the bot to drain and stop; return its last stats (killed if it does not stop)."""
        try:
            final = await self.request("stop", timeout=timeout)
            await asyncio.wait_for(self.proc.wait(), timeout)
            return final
        except (BotProcessError, TimeoutError, ConnectionError):
            await self.kill()
            raise
        finally:
            self._close_pipes()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        if not self._log_file.closed:
            self._log_file.close()
