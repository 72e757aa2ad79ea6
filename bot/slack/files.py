"""What an answer adds below itself in its thread: further messages (the delegation trace),
and the full text of an answer too long for its messages as a file. `ThreadExtras` gives both
kinds of stream (classic and native) the same two methods.

An answer past ``bot.render.answer.MAX_ANSWER_MESSAGES`` messages ends with the ``TRUNCATED``
note, which says the full answer is attached below; `attach_full_answer` attaches it, with
Slack's current upload flow (``files.upload`` is retired):

1. ``files.getUploadURLExternal(filename, length)`` → ``upload_url``, ``file_id``;
2. POST the bytes to ``upload_url``;
3. ``files.completeUploadExternal(files=[{id, title}], channel_id, thread_ts)`` shares it in
   the thread.

Each step is retried like any write that must happen (`SlackCaller.reliably`). When the file
cannot be attached, the note must not stand uncorrected: ``FULL_ANSWER_MISSING`` is posted
below it instead. Needs the bot scope ``files:write``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from bot.errors import SlackDeliveryError
from bot.render.answer import FULL_ANSWER_MISSING
from bot.render.message import SlackMessage
from bot.slack.budget import Budget, BudgetBook
from bot.slack.calls import UPLOAD, SlackCaller, payload_args

log = structlog.get_logger(__name__)

FILENAME = "answer.md"
FILES_PER_SECOND = 90 / 60  # both files.*External methods are Tier 4, per workspace
FILES_BURST = 10.0


def files_bucket(budgets: BudgetBook, team_id: str) -> Budget:
    """The workspace's budget for files.getUploadURLExternal / completeUploadExternal."""
    return budgets.bucket(f"files:{team_id}", FILES_PER_SECOND, FILES_BURST)


async def share_file(
    caller: SlackCaller,
    bucket: Budget,
    *,
    channel: str,
    thread_ts: str,
    content: bytes,
    filename: str,
    title: str,
) -> str:
    """Upload `content` and share it in the thread; the file id. Raises SlackDeliveryError."""
    got = await caller.call_reliably(
        "files.getUploadURLExternal", bucket, filename=filename, length=len(content)
    )
    url, file_id = got.get("upload_url"), got.get("file_id")
    if not isinstance(url, str) or not isinstance(file_id, str) or not url or not file_id:
        raise SlackDeliveryError("files.getUploadURLExternal", "no upload_url or file_id")
    await caller.reliably(UPLOAD, bucket, lambda: caller.upload(url, content))
    await caller.call_reliably(
        "files.completeUploadExternal",
        bucket,
        files=[{"id": file_id, "title": title}],
        channel_id=channel,
        thread_ts=thread_ts,
    )
    return file_id


async def attach_full_answer(
    caller: SlackCaller,
    budgets: BudgetBook,
    *,
    team_id: str,
    channel: str,
    thread_ts: str,
    markdown: str,
    title: str,
) -> int:
    """Attach `markdown` as a file in the thread, or post ``FULL_ANSWER_MISSING`` when that
    fails (logged either way; a failure of that post too is only logged). Never raises
    SlackDeliveryError. Returns the number of Slack calls that succeeded."""
    try:
        file_id = await share_file(
            caller,
            files_bucket(budgets, team_id),
            channel=channel,
            thread_ts=thread_ts,
            content=markdown.encode("utf-8"),
            filename=FILENAME,
            title=title,
        )
    except SlackDeliveryError as exc:
        log.warning("full_answer_not_attached", method=exc.method, error=exc.error)
    else:
        log.info("full_answer_attached", file_id=file_id, chars=len(markdown))
        return 3
    try:
        await caller.call_reliably(
            "chat.postMessage",
            budgets.posts(channel),
            channel=channel,
            thread_ts=thread_ts,
            **payload_args(SlackMessage(FULL_ANSWER_MISSING)),
        )
    except SlackDeliveryError as exc:
        log.warning("full_answer_missing_note_failed", method=exc.method, error=exc.error)
        return 0
    return 1


class ExtrasHost(Protocol):
    """What the extras need of the publisher that opened the stream."""

    caller: SlackCaller
    budgets: BudgetBook


class ThreadExtras:
    """`post_below` and `attach_full_answer` for a stream with these attributes."""

    p: ExtrasHost
    team_id: str
    channel: str
    thread_ts: str
    calls: int  # Slack calls that succeeded

    async def post_below(self, payloads: Sequence[SlackMessage]) -> None:
        """Post further messages in the thread (the delegation trace), in order."""
        for payload in payloads:
            await self.p.caller.call_reliably(
                "chat.postMessage",
                self.p.budgets.posts(self.channel),
                channel=self.channel,
                thread_ts=self.thread_ts,
                **payload_args(payload),
            )
            self.calls += 1

    async def attach_full_answer(self, markdown: str, title: str) -> None:
        """Attach the full answer as a file in the thread (see `attach_full_answer`)."""
        self.calls += await attach_full_answer(
            self.p.caller,
            self.p.budgets,
            team_id=self.team_id,
            channel=self.channel,
            thread_ts=self.thread_ts,
            markdown=markdown,
            title=title,
        )
