"""The one payload type every renderer returns and the publisher sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SlackMessage:
    """One Slack message: ``text`` is mrkdwn and always set (it is the notification fallback)."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
