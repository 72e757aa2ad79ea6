"""Writing the Powabase event stream: one `data: <json>` line and a blank line per frame, an
increasing `seq` and an ISO `ts` on the events that carry them, and `: keepalive` comments after
a stretch of silence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from sandbox.powabase.state import RunRecord, now_iso

# Events the engine passes through unchanged; they carry their name in "type" as well.
ENGINE_EVENTS = frozenset(
    {"step_started", "step_completed", "tool_call", "tool_result", "content_delta"}
)
# Events without seq/ts.
UNSEQUENCED = frozenset({"start", "content_delta", "chunk", "complete", "error"})
KEEPALIVE = b": keepalive\n\n"


def encode_frame(payload: dict[str, Any]) -> bytes:
    """One SSE frame: a single `data:` line (compact JSON, no newlines) and a blank line."""
    return (
        b"data: "
        + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        + b"\n\n"
    )


class EventWriter:
    """Writes a run's events to an aiohttp stream response and records when each was sent."""

    def __init__(
        self, response: web.StreamResponse, record: RunRecord, keepalive_interval: float
    ) -> None:
        self._response = response
        self._record = record
        self._interval = keepalive_interval
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()
        self._seq = 0
        self._silent_until = 0.0
        self._keepalive_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventWriter:
        self._keepalive_task = asyncio.create_task(self._keepalive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task

    async def send(self, name: str, /, **fields: Any) -> float:
        """Write event ``name``; returns the monotonic time right after it was written."""
        payload: dict[str, Any] = {"event": name}
        if name in ENGINE_EVENTS:
            payload["type"] = name
        payload.update(fields)
        if name not in UNSEQUENCED:
            self._seq += 1
            payload["seq"] = self._seq
            payload["ts"] = now_iso()
        await self._write(encode_frame(payload))
        sent = time.monotonic()
        self._record.events.append((sent, name))
        self._record.event_payloads.append(payload)
        return sent

    async def silence(self, seconds: float) -> None:
        """Send nothing at all, keepalives included, for ``seconds`` (a hung upstream)."""
        self._silent_until = time.monotonic() + seconds
        await asyncio.sleep(seconds)

    async def send_oversize(self, name: str, field: str, chars: int, piece: int = 65536) -> None:
        """Write one `data:` line whose ``field`` holds ``chars`` characters, in pieces."""
        head = encode_frame({"event": name, field: ""})[: -len(b'"}\n\n')]
        async with self._lock:  # no keepalive may land inside the line
            await self._response.write(head)
            for start in range(0, chars, piece):
                await self._response.write(b"x" * min(piece, chars - start))
            await self._response.write(b'"}\n\n')
            self._last_write = time.monotonic()
        self._record.events.append((time.monotonic(), name))

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self._response.write(data)
            self._last_write = time.monotonic()

    async def _keepalive(self) -> None:
        while True:
            due = max(self._last_write + self._interval, self._silent_until)
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self._write(KEEPALIVE)
            except (ConnectionError, RuntimeError):
                return
            self._record.events.append((time.monotonic(), "keepalive"))
