"""The link rule: which label/target pairs deceive, and how native Markdown is guarded.

The exact Slack output for each case (classic mrkdwn and native markdown_text) is in
tests/faults/test_hostile_output.py; here the rule itself and its stability while streaming.
"""

from __future__ import annotations

import pytest

from bot.render.links import deceives, guard_markdown, label_hosts, target_host

EVIL = "https://evil.example/steal"


@pytest.mark.parametrize(
    "label",
    [
        "billing.powabase.ai",
        "https://billing.powabase.ai/reset",
        "www.billing.powabase.ai/path",
        "BILLING.Powabase.AI",
        "  <billing.powabase.ai>.  ",
        "(billing.powabase.ai),",
        "Go to billing.powabase.ai now",
        "billing.powabase.ai:443",
        "https://billing.powabase.ai@evil.example",  # userinfo: reads as powabase, goes to evil
        "help@powabase.ai",
        "b\u0456lling.powabase.ai",  # Cyrillic і: another host than the ASCII one
        "billing\u200b.powabase\u00ad.ai",  # invisible characters inside the host
        "billing\uff0epowabase\u3002ai",  # full-width and ideographic dots
        "\uff42\uff49\uff4c\uff4c\uff49\uff4e\uff47.powabase.ai",  # full-width letters
        "/billing.powabase.ai",
        "10.0.0.1",
        "xn--bcher-kva.de",
    ],
)
def test_a_label_naming_another_host_deceives(label: str) -> None:
    """A label that reads as an address other than the target's is caught in all its disguises."""
    assert deceives(label, EVIL)


@pytest.mark.parametrize(
    ("label", "url"),
    [
        ("reset your password", EVIL),
        ("Section 2.1", EVIL),
        ("e.g. the docs", EVIL),
        ("billing.powabase.ai", "https://billing.powabase.ai/reset"),
        ("www.billing.powabase.ai", "HTTPS://Billing.Powabase.AI.:443/x"),
        ("billing.powabase.ai", "https://www.billing.powabase.ai"),
        ("https://docs.powabase.ai/guide/setup.html", "https://docs.powabase.ai/guide/setup.html"),
        ("docs.powabase.ai/guide/setup.html", "https://docs.powabase.ai/guide/setup.html"),
        ("bücher.de", "https://xn--bcher-kva.de/"),
        ("xn--bcher-kva.de", "https://bücher.de/"),
        ("first.last@powabase.ai", "mailto:first.last@powabase.ai"),
        ("billing.powabase.ai", "https://billing%2Epowabase%2Eai/"),
    ],
)
def test_a_label_naming_the_target_host_or_no_host_does_not_deceive(label: str, url: str) -> None:
    """Prose labels and labels naming the target's own host stay ordinary links."""
    assert not deceives(label, url)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://billing.powabase.ai@evil.example/x", "evil.example"),
        ("https://evil.example\\@billing.powabase.ai/", "evil.example"),  # browsers read \ as /
        ("https:///evil.example", "evil.example"),
        ("HTTPS://EVIL.EXAMPLE:8443", "evil.example"),
        ("https://evil%2Eexample/", "evil.example"),
        ("https://xn--bcher-kva.de/", "bücher.de"),
        ("mailto:help@Powabase.AI?subject=hi", "powabase.ai"),
        ("//billing.powabase.ai", None),
        ("/relative", None),
        ("javascript:alert(1)", None),
    ],
)
def test_target_host_is_the_host_a_browser_opens(url: str, host: str | None) -> None:
    """The target is read the way a browser reads it, so no parser trick moves its host."""
    assert target_host(url) == host


def test_a_path_or_mail_local_part_is_not_taken_for_a_host() -> None:
    """File names in a path and the local part of an address do not count as hosts."""
    assert label_hosts("docs.powabase.ai/setup.html?x=a.b") == {"docs.powabase.ai"}
    assert label_hosts("first.last+tag@powabase.ai") == {"powabase.ai"}


def test_a_target_without_a_host_deceives_only_under_an_address_label() -> None:
    """A relative target behind "billing.powabase.ai" deceives; behind "docs" it does not."""
    assert deceives("billing.powabase.ai", "/reset")
    assert not deceives("docs", "/reset")


def test_an_absurdly_long_label_is_never_a_hidden_link() -> None:
    """Labels too long to analyse are treated as deceptive (bounded work, safe outcome)."""
    assert deceives("word " * 1000, "https://powabase.ai")


HOSTILE_STREAM = (
    "Intro.\n\n"
    "[https://billing.powabase.ai/reset](https://evil.example/steal) then "
    "[see billing.powabase.ai now](https://evil.example) and [ok](https://powabase.ai) and "
    "<https://evil.example/steal|billing.powabase.ai> and <https://evil.example|see x.com> "
    "and [billing.powabase.ai](<https://evil.example/a b>) and [x](javascript:alert(1)) "
    "and <javascript:alert(1)> and [billing.powabase.ai]( https://evil.example) done.\n\n"
    "[billing.powabase.ai](<https://billing.powabase.ai .evil.example>) and "
    "[billing.powabase.ai](<https://billing.powabase.ai/a b>) here.\n\n"
    "[ref]: https://evil.example\n\n"
    "[a [nested] billing.powabase.ai](https://evil.example) and [reset](https://powabase.ai/r).\n"
)


def stream(text: str) -> str:
    """What native streaming sends: guarded text up to the last whitespace, growing one
    character at a time; fails if an earlier send is ever contradicted."""
    sent = ""
    for end in range(len(text) + 1):
        full = guard_markdown(text[:end])
        assert full.startswith(sent), f"rewrote text already sent at {end}: {text[:end]!r}"
        new = full[len(sent) :]
        if end < len(text):
            cut = max(new.rfind(" "), new.rfind("\n"))
            new = new[: cut + 1] if cut >= 0 else ""
        sent += new
    return sent


def test_guarding_is_append_only_while_the_text_streams() -> None:
    """Native streaming never has to take back text it sent: each break is decided in time."""
    assert stream(HOSTILE_STREAM) == guard_markdown(HOSTILE_STREAM)


def test_guarding_leaves_benign_markdown_untouched() -> None:
    """Ordinary links, autolinks and prose go to Slack exactly as the model wrote them."""
    text = (
        "See [reset your password](https://billing.powabase.ai/reset), "
        "[billing.powabase.ai](https://billing.powabase.ai/x), <https://powabase.ai/docs>, "
        "<mailto:help@powabase.ai> and `[a](b)`-style code. Arrays a[1](2) are left alone."
    )
    assert guard_markdown(text) == text
