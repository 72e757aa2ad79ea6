"""Which messages ask for a person, which ask for a fresh start, where a hand-over goes, and the
problems admins are shown: the small rules of `bot.escalation` and the listeners' `is_reset`."""

from __future__ import annotations

import pytest

from bot.escalation import Problems, is_human_request, specialist_channel
from bot.slack.listeners import is_reset

ASKS_FOR_A_PERSON = [
    "talk to a person",
    "Talk to a human!",
    "can I speak to someone please?",
    "real person",
    "human please",
    "Human",
    "agent please",
    "escalate",
    "Can you escalate this please",
    "contact support",
    "talk to support",
    "I want to talk to a real person",
    "I'd like to speak with a representative",
    "I’d rather talk to a human",
    "transfer me to a human",
    "Is there a human I can talk to?",
    "get me a human",
    "I need help from a human",
    "speak to an agent",
    "live agent",
    "hi, can i please talk to a human :pray:",
    "get in touch with the support team",
    "escalate to a human",
    "TALK TO A PERSON NOW",
]

DOES_NOT = [
    "How do I add a human reviewer to an approval flow?",
    "Does the billing agent handle refunds?",
    "What does escalate mean in our SLA?",
    "human resources",
    "how can I contact support?",
    "I want to contact support about refunds",
    "talk to me about the Pro plan",
    "The human touch matters",
    "Can I talk to someone about my invoice?",
    "escalate this to tier 2 in Zendesk",
    "who is a real person on the team",
    "I need support",
    "please",
    "reset",
    "What is the refund window for the Pro plan if I paid annually?",
    "how do I talk to a human in the phone menu",
    "",
]


@pytest.mark.parametrize("text", ASKS_FOR_A_PERSON)
def test_a_whole_message_asking_for_a_person_is_recognised(text: str) -> None:
    """A message whose whole intent is reaching a person is a request for one."""
    assert is_human_request(text)


@pytest.mark.parametrize("text", DOES_NOT)
def test_a_question_that_merely_mentions_people_is_not_a_request(text: str) -> None:
    """Questions about humans, agents, support or escalation are answered, not handed over."""
    assert not is_human_request(text)


def test_a_very_long_message_is_never_a_request() -> None:
    """Only a short whole-message request counts (and matching stays cheap)."""
    assert not is_human_request("please " * 200 + "talk to a human")


@pytest.mark.parametrize(
    "text",
    ["reset", "Reset.", "RESET!", "new conversation", "Start a new conversation", "start over",
     "<@UBOT> reset"],
)  # fmt: skip
def test_reset_words_alone_start_over(text: str) -> None:
    """ "reset" / "new conversation" / "start over" alone (any case, after a mention) is a
    fresh start."""
    assert is_reset(text, "UBOT")


@pytest.mark.parametrize(
    "text", ["reset my password", "How do I reset 2FA?", "a new conversation feature?", "resets"]
)
def test_a_question_about_resetting_is_not_a_fresh_start(text: str) -> None:
    """A question that contains "reset" is answered, not taken as a fresh start."""
    assert not is_reset(text, "UBOT")


def test_the_specialists_channel_is_found_by_its_name_or_short_name() -> None:
    """The workspace setting names a channel per specialist ("billing-agent" or "billing");
    other specialists, blank entries and missing settings give None (the default applies)."""
    settings = {"escalation_channels": {"billing": "C0BILL", "technical-agent": " "}}
    assert specialist_channel(settings, "billing-agent") == "C0BILL"
    assert specialist_channel({"escalation_channels": {"billing-agent": "C1"}}, "billing") == "C1"
    assert specialist_channel(settings, "technical-agent") is None
    assert specialist_channel(settings, "product-agent") is None
    assert specialist_channel(settings, None) is None
    assert specialist_channel(None, "billing-agent") is None
    assert specialist_channel({"escalation_channels": "C0"}, "billing-agent") is None


def test_problems_are_per_workspace_replaced_by_subject_cleared_and_bounded() -> None:
    """A problem noted again replaces the old one, clearing it removes it, and only the newest
    few per workspace and the latest workspaces are kept."""
    problems = Problems(per_team=2, teams=2)
    problems.note("T1", "channel:C1", "old")
    problems.note("T1", "channel:C1", "new")
    assert problems.of("T1") == ["new"]
    problems.note("T1", "channel:C2", "two")
    problems.note("T1", "channel:C3", "three")
    assert problems.of("T1") == ["two", "three"]
    problems.clear("T1", "channel:C2")
    assert problems.of("T1") == ["three"]
    problems.note("T2", "x", "t2")
    problems.note("T3", "x", "t3")
    assert problems.of("T1") == [] and problems.of("T3") == ["t3"]
    assert problems.of("T9") == []
