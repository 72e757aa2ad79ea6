"""The feedback buttons under a final answer, and what a click on them tells the clicker (pure).

A finished answer's last message carries its text as section blocks followed by one
``context_actions`` block: Slack's ``feedback_buttons`` ("Helpful" / "Not helpful", action
``FEEDBACK_ACTION``) and an ``icon_button`` "New conversation" (action ``RESET_ACTION``; the
trash icon is the only one Slack offers, and only feedback buttons and icon buttons may sit in a
``context_actions`` block). The message's ``text`` stays the full mrkdwn: it is the notification
and the fallback, and section blocks show the same text.

A click is answered with a message only the clicker sees (:func:`thanks`); a negative rating
also offers a "Talk to a person" button (action ``ESCALATE_ACTION``, value: the rated message's
ts) that hands the conversation to the support team.
"""

from __future__ import annotations

from typing import Any

from bot.render.message import SlackMessage
from bot.render.split import is_grapheme_boundary
from bot.state import AnswerState, Phase

FEEDBACK_ACTION = "powabot_feedback"  # the feedback_buttons element
RESET_ACTION = "powabot_reset"  # "New conversation" (value `RESET_VALUE`)
ESCALATE_ACTION = "powabot_escalate"  # "Talk to a person" (value: the rated answer's ts)
GOOD, BAD = "good", "bad"  # the feedback buttons' values
RESET_VALUE = "reset"
RATINGS = {GOOD: 1, BAD: -1}

HELPFUL = "Helpful"
NOT_HELPFUL = "Not helpful"
NEW_CONVERSATION = "New conversation"
TALK_TO_A_PERSON = "Talk to a person"
THANKS = "Thanks for the feedback!"
THANKS_NEGATIVE = (
    "Thanks for the feedback! Sorry this didn't help. A person from the support team can "
    "take it from here."
)
NOT_FOUND = "I can't find that conversation any more."
NOT_SAVED = "I couldn't save your feedback just now. Please try again in a moment."

SECTION_MAX = 3000  # characters of a section block's text
MAX_BLOCKS = 50  # blocks in one message
FENCE = "```"


def rateable(state: AnswerState) -> bool:
    """A finished answer with text and a run: its last message gets the buttons (the answer
    is kept in the store under that message for the clicks)."""
    return state.phase is Phase.DONE and bool(state.text.strip()) and bool(state.run_id)


def rating_of(value: object) -> int | None:
    """1 for the positive button's value, -1 for the negative one's, None for anything else."""
    return RATINGS.get(value) if isinstance(value, str) else None


def answer_actions() -> dict[str, Any]:
    """The ``context_actions`` block under a final answer: feedback and a fresh start."""
    return {
        "type": "context_actions",  # no block_id: Slack makes one per message and edit
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": HELPFUL},
                    "value": GOOD,
                    "accessibility_label": "This answer was helpful",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": NOT_HELPFUL},
                    "value": BAD,
                    "accessibility_label": "This answer was not helpful",
                },
            },
            {
                "type": "icon_button",
                "icon": "trash",
                "text": {"type": "plain_text", "text": NEW_CONVERSATION},
                "action_id": RESET_ACTION,
                "value": RESET_VALUE,
                "accessibility_label": "Start a new conversation in this thread",
            },
        ],
    }


def answer_blocks(mrkdwn: str) -> list[dict[str, Any]]:
    """A final answer message's blocks: its text as mrkdwn sections, then the actions block."""
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
        for piece in mrkdwn_sections(mrkdwn)
    ]
    return [*sections[: MAX_BLOCKS - 1], answer_actions()]


def mrkdwn_sections(mrkdwn: str, limit: int = SECTION_MAX) -> list[str]:
    """``mrkdwn`` cut into pieces of at most ``limit`` characters for section blocks.

    Cuts fall at line breaks (a line longer than a piece is cut after a space, else between
    characters); a code block cut in two is closed at the end of one piece and reopened at the
    start of the next. Blank pieces are left out (Slack refuses an empty section).
    """
    if limit < 64:
        raise ValueError(f"mrkdwn_sections: limit must be at least 64, got {limit}")
    if len(mrkdwn) <= limit:
        return [mrkdwn] if mrkdwn.strip() else []
    room = len(FENCE) + 1  # a closing (or reopening) fence and its line break
    pieces: list[str] = []
    current = ""
    fenced = False  # `current` ends inside a code block
    for line in _lines(mrkdwn, limit - 2 * room):
        after = fenced != (line.count(FENCE) % 2 == 1)
        if current and len(current) + len(line) + (room if after else 0) > limit:
            pieces.append(_closed(current) if fenced else current)
            current = FENCE + "\n" if fenced else ""
        current += line
        fenced = after
    pieces.append(current)
    return [piece.rstrip("\n") for piece in pieces if piece.strip() and piece.strip() != FENCE]


def _closed(piece: str) -> str:
    return piece + ("" if piece.endswith("\n") else "\n") + FENCE


def _lines(text: str, width: int) -> list[str]:
    """The lines of ``text`` (with their line breaks), none longer than ``width``."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > width:
            cut = line.rfind(" ", 0, width) + 1
            if cut <= 0:
                cut = width
                while cut > 1 and not is_grapheme_boundary(line, cut):
                    cut -= 1
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def thanks(rating: int, reply_ts: str) -> SlackMessage:
    """The clicker's ephemeral thanks; a negative rating also offers a person to talk to."""
    if rating > 0:
        return SlackMessage(THANKS)
    return SlackMessage(
        THANKS_NEGATIVE,
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": THANKS_NEGATIVE}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": ESCALATE_ACTION,
                        "text": {"type": "plain_text", "text": TALK_TO_A_PERSON},
                        "value": reply_ts,
                    }
                ],
            },
        ],
    )
