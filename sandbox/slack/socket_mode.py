"""Socket Mode server side: hello, envelopes spread over connections, acks and redelivery.

Like Slack with several replicas of an app (../shared/ops-notes.md): at most `max_connections`
(10) live connections per app, one more is told `too_many_websockets` and closed; each envelope
goes to any ONE live connection, picked at random (seedable: `seed`); an envelope not acked
within `ack_timeout` is sent again, maybe down another connection, with `retry_attempt` + 1 and
`retry_reason` "timeout". With `redeliver_once`, every event is also sent a second time, in a
new envelope (same event id, `retry_attempt` 1), down another live connection when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSMsgType, web

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 10  # Slack: "up to 10 simultaneous WebSocket connections" per app


@dataclass(frozen=True)
class Delivery:
    """One envelope sent down a WebSocket (first delivery or a retry)."""

    envelope_id: str
    event_id: str
    retry_attempt: int
    retry_reason: str
    t: float
    connection: int  # which connection carried it, numbered from 1 in connect order


class SocketModeHub:
    """Tracks the app's WebSocket connections and every envelope until it is acked."""

    def __init__(
        self,
        *,
        app_id: str,
        ack_timeout: float,
        max_retries: int,
        on_change: Callable[[], None],
        max_connections: int = MAX_CONNECTIONS,
        seed: int | None = None,
        redeliver_once: bool = False,
    ) -> None:
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.max_connections = max_connections
        self.redeliver_once = redeliver_once
        self.refused_connections = 0  # told too_many_websockets
        self._rng = random.Random(seed)
        self.acked: set[str] = set()
        self.ack_payloads: dict[str, Any] = {}
        """envelope_id → the ``payload`` an ack carried (only acks that carried one)."""
        self.deliveries: list[Delivery] = []
        self._on_change = on_change
        self._tickets: set[str] = set()
        self._live: list[web.WebSocketResponse] = []  # connected and not told to disconnect
        self._all: dict[web.WebSocketResponse, int] = {}
        self._connection_numbers = 0
        self._queue: deque[str] = deque()  # envelope ids waiting for a connection
        self._envelopes: dict[str, dict[str, Any]] = {}
        self._awaiting_ack: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    @property
    def num_connections(self) -> int:
        return len(self._live)

    def envelope(self, envelope_id: str) -> dict[str, Any]:
        """The envelope sent with this id (KeyError for one never sent)."""
        return self._envelopes[envelope_id]

    def issue_ticket(self) -> str:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return ticket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The ``/link`` WebSocket endpoint the SDK connects to."""
        if request.query.get("ticket") not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        if len(self._live) >= self.max_connections:
            self.refused_connections += 1
            log.info("socket_mode_too_many_websockets", live=len(self._live))
            disconnect = {"type": "disconnect", "reason": "too_many_websockets"}
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({**disconnect, "debug_info": {"host": "standin"}}))
            await ws.close()
            self._on_change()
            return ws
        self._connection_numbers += 1
        self._all[ws] = self._connection_numbers
        hello = {
            "type": "hello",
            "num_connections": len(self._live) + 1,
            "connection_info": {"app_id": self.app_id},
            "debug_info": {
                "host": "standin",
                "build_number": 1,
                "approximate_connection_time": 3600,
            },
        }
        await ws.send_str(json.dumps(hello))
        self._live.append(ws)
        self.connected.set()
        log.debug("socket_mode_connected", num_connections=len(self._live))
        self._on_change()
        await self._flush_queue()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(msg.data)
        finally:
            self._drop(ws)
        return ws

    def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            log.warning("socket_mode_bad_frame", size=len(data))
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if isinstance(envelope_id, str) and envelope_id in self._envelopes:
            self.acked.add(envelope_id)
            if message.get("payload") is not None:
                self.ack_payloads[envelope_id] = message["payload"]
            self._awaiting_ack.discard(envelope_id)
            timer = self._timers.pop(envelope_id, None)
            if timer is not None:
                timer.cancel()
            self._on_change()

    def _drop(self, ws: web.WebSocketResponse) -> None:
        self._all.pop(ws, None)
        if ws in self._live:
            self._live.remove(ws)
        if not self._live:
            self.connected.clear()
        self._on_change()

    async def send(self, env: dict[str, Any]) -> None:
        """Register a new envelope and send it now, or queue it until a connection opens."""
        self._envelopes[env["envelope_id"]] = env
        if self._live:
            await self._transmit(env["envelope_id"])
        else:
            self._queue.append(env["envelope_id"])

    async def _redeliver_elsewhere(self, envelope_id: str, first: web.WebSocketResponse) -> None:
        """`redeliver_once`: the event again, in a new envelope, down another connection."""
        env = self._envelopes[envelope_id]
        copy = {
            **env,
            "envelope_id": str(uuid.uuid4()),
            "retry_attempt": env["retry_attempt"] + 1,
            "retry_reason": "timeout",
            "redelivery": True,
        }
        self._envelopes[copy["envelope_id"]] = copy
        await self._transmit(copy["envelope_id"], avoid=first)

    async def resend(self, envelope_id: str, reason: str) -> None:
        """Send a known envelope again with retry_attempt + 1."""
        env = self._envelopes.get(envelope_id)
        if env is None:
            raise KeyError(f"no envelope {envelope_id!r} was ever delivered by this stand-in")
        env["retry_attempt"] += 1
        env["retry_reason"] = reason
        if self._live:
            await self._transmit(envelope_id)
        else:
            self._queue.append(envelope_id)

    async def _flush_queue(self) -> None:
        while self._queue and self._live:
            await self._transmit(self._queue.popleft())

    def _pick(self, avoid: web.WebSocketResponse | None) -> web.WebSocketResponse:
        """Any one live connection, at random; another than `avoid` when there is one."""
        choices = [ws for ws in self._live if ws is not avoid] or self._live
        return self._rng.choice(choices)

    async def _transmit(
        self, envelope_id: str, *, avoid: web.WebSocketResponse | None = None
    ) -> None:
        env = self._envelopes[envelope_id]
        if not self._live:
            self._queue.append(envelope_id)
            return
        ws = self._pick(avoid)
        wire = {k: v for k, v in env.items() if k != "redelivery"}
        try:
            await ws.send_str(json.dumps(wire))
        except (ConnectionError, RuntimeError):
            self._drop(ws)
            self._queue.append(envelope_id)
            await self._flush_queue()
            return
        event_id = str(env["payload"].get("event_id") or env["payload"].get("trigger_id") or "")
        self.deliveries.append(
            Delivery(
                envelope_id,
                event_id,
                env["retry_attempt"],
                env["retry_reason"],
                time.monotonic(),
                self._all.get(ws, 0),
            )
        )
        self._awaiting_ack.add(envelope_id)
        old = self._timers.pop(envelope_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[envelope_id] = loop.call_later(
            self.ack_timeout, self._ack_timed_out, envelope_id
        )
        self._on_change()
        first = env["retry_attempt"] == 0 and not env.get("redelivery")
        if self.redeliver_once and first and env.get("type") == "events_api":
            env["redelivery"] = False  # only once, even if this envelope is retried later
            await self._redeliver_elsewhere(envelope_id, ws)

    def _ack_timed_out(self, envelope_id: str) -> None:
        self._timers.pop(envelope_id, None)
        env = self._envelopes[envelope_id]
        if envelope_id not in self._awaiting_ack or env["retry_attempt"] >= self.max_retries:
            return
        if env.get("type") != "events_api":  # Slack retries events only; a click just fails
            return
        self.spawn(self.resend(envelope_id, "timeout"))

    def spawn(self, coro: Any) -> None:
        """Run a delivery in the background, keeping a reference until it finishes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def disconnect_all(self, reason: str) -> None:
        """Tell every connection to go away; the SDK opens a fresh one and closes the old."""
        message = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}
        )
        draining, self._live = self._live, []
        self.connected.clear()
        for ws in draining:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(message)
        self._on_change()

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ws in list(self._all):
            await ws.close()
