"""The assistant surface's pure parts: prompts from the eval set, the greeting, titles, the
bounded memories, and the POWABOT_SUGGESTED_PROMPTS setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import SuggestedPrompt, load_settings
from bot.slack.assistant import (
    GENERIC_GREETING,
    AssistantContexts,
    GreetingMemo,
    default_prompts,
    first_questions,
    greeting,
    load_eval,
    prompt_title,
    thread_title,
)


def test_first_question_per_specialist_in_order_and_odd_entries_skipped() -> None:
    """Each specialist's first question, in order of appearance; entries of another shape are
    skipped rather than breaking the prompts."""
    data = {
        "questions": [
            "not a mapping",
            {"question": "", "expected": "billing-agent"},
            {"question": "How do refunds work?", "expected": "billing-agent"},
            {"question": "Second billing question?", "expected": "billing-agent"},
            {"question": "No specialist named"},
            {"question": 42, "expected": "technical-agent"},
            {"question": "What is SSO?", "expected": "technical-agent"},
        ]
    }
    assert first_questions(data) == {
        "billing-agent": "How do refunds work?",
        "technical-agent": "What is SSO?",
    }
    assert first_questions(None) == {} and first_questions({"questions": "x"}) == {}


def test_default_prompts_are_at_most_four_with_short_titles() -> None:
    """One prompt per specialist, never more than Slack's four, titles at most 30 characters,
    each message the full question."""
    questions = {
        f"agent-{i}": f"What is the long question number {i} about plans?" for i in range(6)
    }
    prompts = default_prompts(questions)
    assert len(prompts) == 4
    assert [p.message for p in prompts] == list(questions.values())[:4]
    assert all(0 < len(p.title) <= 30 for p in prompts)


def test_the_seed_eval_set_gives_one_prompt_per_specialist() -> None:
    """The packaged eval set yields the billing, technical and product specialists' first
    questions, and the greeting names those fields in one sentence."""
    questions = load_eval()
    assert list(questions) == ["billing-agent", "technical-agent", "product-agent"]
    text = greeting(questions)
    assert "billing, technical and product" in text and text.count(".") <= 1


def test_an_unreadable_eval_set_gives_no_prompts_and_the_generic_greeting(tmp_path: Path) -> None:
    """A missing or broken eval file leaves the DM without default prompts, never broken."""
    assert load_eval(tmp_path / "missing.yaml") == {}
    broken = tmp_path / "eval.yaml"
    broken.write_text("questions: [unclosed", encoding="utf-8")
    assert load_eval(broken) == {}
    assert greeting({}) == GENERIC_GREETING


@pytest.mark.parametrize(
    ("question", "title"),
    [
        (
            "What's the refund window for the Pro plan if I paid annually?",
            "Refund window for the Pro…",
        ),
        ("How do I authenticate against your API?", "Authenticate against your API"),
        ("How many tasks can a single project hold?", "How many tasks can a single…"),
    ],
)
def test_prompt_titles_name_the_topic(question: str, title: str) -> None:
    """A default prompt's title is its question's topic, cut at a word to 30 characters."""
    assert prompt_title(question) == title


def test_thread_title_is_plain_and_short() -> None:
    """Mentions, link targets and mrkdwn are dropped; the title is at most 60 characters."""
    title = thread_title(
        "<@U0BOT> *Why* is `insufficient_scope` returned by <https://x.io/a|the API>?"
    )
    assert title == "Why is insufficient_scope returned by the API?"
    long = thread_title("word " * 40)
    assert len(long) <= 60 and long.endswith("…")
    assert thread_title("<@U0BOT>") == "Question"


def test_viewed_channels_are_bounded() -> None:
    """Only the most recent threads' viewed channels are kept; a thread without context
    forgets its entry."""
    contexts = AssistantContexts(kept=2)
    contexts.remember("D1", "1.0", "C1")
    contexts.remember("D1", "2.0", "C2")
    contexts.remember("D1", "3.0", "C3")
    assert contexts.viewing("D1", "1.0") is None
    assert contexts.viewing("D1", "3.0") == "C3" and len(contexts) == 2
    contexts.remember("D1", "3.0", None)
    assert contexts.viewing("D1", "3.0") is None


def test_greeting_memo_once_per_user_per_interval() -> None:
    """A user is due again only after the interval; the memo forgets the oldest users first."""
    now = [0.0]
    memo = GreetingMemo(every=60.0, kept=2, clock=lambda: now[0])
    assert memo.due("T", "U1") and not memo.due("T", "U1")
    now[0] = 61.0
    assert memo.due("T", "U1")
    assert memo.due("T", "U2") and memo.due("T", "U3")  # U1 is forgotten now
    assert memo.due("T", "U1")
    memo.forget("T", "U3")
    assert memo.due("T", "U3")


def test_suggested_prompts_setting_reads_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """POWABOT_SUGGESTED_PROMPTS holds a JSON list of {title, message}; blank means defaults."""
    monkeypatch.setenv("POWABOT_SUGGESTED_PROMPTS", '[{"title": " Refunds ", "message": "How?"}]')
    assert load_settings().POWABOT_SUGGESTED_PROMPTS == [
        SuggestedPrompt(title="Refunds", message="How?")
    ]
    monkeypatch.setenv("POWABOT_SUGGESTED_PROMPTS", "  ")
    assert load_settings().POWABOT_SUGGESTED_PROMPTS == []


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"title": "a", "message": "b"}',
        '[{"title": "", "message": "b"}]',
        '[{"title": "a"}]',
        '[{"title": "a", "message": "b", "extra": 1}]',
        "[" + ",".join(['{"title": "a", "message": "b"}'] * 5) + "]",
    ],
)
def test_bad_suggested_prompts_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A value that is not a list of at most 4 {title, message} stops start-up, naming it."""
    monkeypatch.setenv("POWABOT_SUGGESTED_PROMPTS", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "POWABOT_SUGGESTED_PROMPTS" in str(err.value)
