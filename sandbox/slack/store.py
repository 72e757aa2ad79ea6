"""The stand-in's message store: every message by (channel, ts), threads, bot messages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

StreamState = Literal["streaming", "stopped", "broken", "expired"]
"""streaming: open; stopped: chat.stopStream (or the user's Stop) closed it; broken: a call
was refused with streaming_mode_mismatch; expired: left open past the stand-in's stream_ttl.
Only an open stream refuses chat.update; the other three refuse appendStream/stopStream with
message_not_in_streaming_state."""
StreamMode = Literal["markdown", "chunks"]


@dataclass
class StoredMessage:
    """One message as Slack currently holds it, plus the history a test wants to read."""

    channel: str
    ts: str
    text: str = ""
    user: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None
    edits: list[tuple[float, str]] = field(default_factory=list)
    """(time.monotonic(), text after the change) for every chat.update and stream append/stop."""
    reactions: dict[str, list[str]] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    """Non-text streaming chunks (task_update, plan_update, blocks) in arrival order."""
    stream_state: StreamState | None = None
    stream_started: float = 0.0
    stream_mode: StreamMode | None = None
    """Fixed by the first stream call that carried content (markdown_text or chunks)."""
    task_display_mode: str | None = None
    """chat.startStream's task_display_mode (timeline | plan), when it was given."""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The task cards as they stand: task_update chunks merged by id (id → fields)."""
    plan_title: str | None = None
    """The title the last plan_update chunk set."""
    session_status: str | None = None
    """chat.stopStream's session_status, when it was given."""
    created: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)
    """Other arguments the poster sent (mrkdwn, unfurl_links, metadata, ...)."""
    reply_count: int = 0
    files: list[dict[str, Any]] | None = None
    """Files shared with this message (files.completeUploadExternal), as the API shows them."""
    team: str | None = None
    """The workspace it was posted in, when not the stand-in's own one."""

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def recipient(self) -> str | None:
        """For an ephemeral message (chat.postEphemeral): the one user who sees it."""
        recipient = self.extra.get("recipient")
        return str(recipient) if recipient is not None else None

    def to_api(self, team_id: str, *, metadata: bool = False) -> dict[str, Any]:
        """The message as Slack's Web API shows it (`metadata`: with the message metadata it
        was posted with, as reads asked for it with include_all_metadata show it)."""
        out: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "text": self.text,
            "team": self.team or team_id,
        }
        if metadata and isinstance(self.extra.get("metadata"), dict):
            out["metadata"] = self.extra["metadata"]
        if self.user is not None:
            out["user"] = self.user
        if self.bot_id is not None:
            out["bot_id"] = self.bot_id
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.reply_count:
            out["reply_count"] = self.reply_count
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.files is not None:
            out["files"] = self.files
            out["upload"] = True
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": users, "count": len(users)}
                for name, users in self.reactions.items()
            ]
        return out


class MessageStore:
    """Messages indexed for O(1) lookup by ts, by thread and by bot channel."""

    def __init__(self) -> None:
        self._messages: dict[tuple[str, str], StoredMessage] = {}
        self._replies: dict[tuple[str, str], list[StoredMessage]] = {}
        self._bot_all: list[StoredMessage] = []
        self._bot_by_channel: dict[str, list[StoredMessage]] = {}
        self._channels: set[str] = set()
        self._last_us = 0

    def next_ts(self) -> str:
        """A unique, strictly increasing Slack ts ("1700000000.000100") close to wall time."""
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        seconds, micros = divmod(self._last_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def add(self, message: StoredMessage) -> StoredMessage:
        """Store a new message (its ts must come from next_ts so threads stay ordered)."""
        self._messages[(message.channel, message.ts)] = message
        self._channels.add(message.channel)
        if message.thread_ts is not None and message.thread_ts != message.ts:
            key = (message.channel, message.thread_ts)
            self._replies.setdefault(key, []).append(message)
            parent = self._messages.get(key)
            if parent is not None:
                parent.thread_ts = parent.ts
                parent.reply_count += 1
        if message.is_bot:
            self._bot_all.append(message)
            self._bot_by_channel.setdefault(message.channel, []).append(message)
        return message

    def has_channel(self, channel: str) -> bool:
        """Has anything ever been posted in ``channel`` (or was it declared with `touch`)?"""
        return channel in self._channels

    def touch(self, channel: str) -> None:
        """Declare ``channel`` as existing before any message is posted in it."""
        self._channels.add(channel)

    def get(self, channel: str, ts: str) -> StoredMessage | None:
        return self._messages.get((channel, ts))

    def remove(self, message: StoredMessage) -> None:
        """Forget a message (chat.delete); the thread parent's reply count drops with it."""
        self._messages.pop((message.channel, message.ts), None)
        if message.thread_ts is not None and message.thread_ts != message.ts:
            replies = self._replies.get((message.channel, message.thread_ts), [])
            if message in replies:
                replies.remove(message)
                parent = self._messages.get((message.channel, message.thread_ts))
                if parent is not None:
                    parent.reply_count -= 1
        if message.is_bot:
            self._bot_all.remove(message)
            self._bot_by_channel.get(message.channel, []).remove(message)

    def thread(self, channel: str, thread_ts: str) -> list[StoredMessage]:
        """Parent (when known) first, then replies by ts."""
        parent = self._messages.get((channel, thread_ts))
        replies = self._replies.get((channel, thread_ts), [])
        return ([parent] if parent is not None else []) + list(replies)

    def bot_messages(self, channel: str | None = None) -> list[StoredMessage]:
        if channel is None:
            return list(self._bot_all)
        return list(self._bot_by_channel.get(channel, []))
