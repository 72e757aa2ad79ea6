"""Small pure formatters shared by the answer and trace renderers (plain text, not escaped)."""

from __future__ import annotations

from typing import Any

from bot.render.split import is_grapheme_boundary

# The recipe's specialists, as a user would call them; any other agent name is shown as-is.
AGENT_LABELS: dict[str, str] = {
    "billing-agent": "billing specialist",
    "technical-agent": "technical specialist",
    "product-agent": "product specialist",
}


def agent_object(agent: str | None) -> str:
    """How to name the agent mid-sentence: "the billing specialist", "shipping-bot"."""
    if not agent:
        return "a specialist"
    label = AGENT_LABELS.get(agent)
    return f"the {label}" if label else agent


def agent_subject(agent: str | None) -> str:
    """How to name the agent at the start of a sentence: "Billing specialist", "shipping-bot"."""
    if not agent:
        return "A specialist"
    label = AGENT_LABELS.get(agent)
    return label[:1].upper() + label[1:] if label else agent


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace and cut to ≤ ``limit`` characters with "…", never inside a grapheme."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = max(limit - 1, 0)
    while cut > 0 and not is_grapheme_boundary(flat, cut):
        cut -= 1
    return flat[:cut].rstrip() + "…"


def seconds(value: float | None) -> str | None:
    """``2.14`` → ``"2.1 s"``; ``None`` → ``None``."""
    if value is None:
        return None
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def millis(value: float | None) -> str | None:
    """``120.4`` → ``"120 ms"``, ``2140`` → ``"2.1 s"``; ``None`` → ``None``."""
    if value is None:
        return None
    return f"{value:.0f} ms" if value < 1000 else seconds(value / 1000)


def tokens(usage: dict[str, Any] | None) -> int | None:
    """Total tokens from a usage dict, whichever naming the engine used; ``None`` if unknown."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int | float) and not isinstance(total, bool):
        return int(total)
    parts = [
        usage.get(key)
        for key in ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens")
    ]
    numbers = [int(p) for p in parts if isinstance(p, int | float) and not isinstance(p, bool)]
    return sum(numbers) if numbers else None


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``count(1, "search", "searches")`` → ``"1 search"``."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"
