"""Markdown (what the model writes) → Slack mrkdwn (what Slack renders), via markdown-it-py.

The source is parsed into a syntax tree (CommonMark + GFM tables and strikethrough) and each node is
rendered on its own; no regex runs over the whole text. Choices Slack forces on us:

* headings become a ``*bold*`` line; ``**b**``/``__b__`` → ``*b*``; ``*i*``/``_i_`` → ``_i_``;
  ``~~s~~`` → ``~s~``; inline code and fenced code keep their backticks, the fence language is
  dropped (Slack would show it as the first code line);
* ``[label](url)`` → ``<url|label>`` for http(s)/mailto only; other targets (relative paths, odd
  schemes such as ``!channel``) are shown as ``label (target)`` text; images become links;
  autolinks become ``<url>``; bare URLs stay text (Slack links them itself); a label that names
  another host than the target's (:mod:`bot.render.links`) is shown as ``label (<url>)``, never
  as a link hiding its target; Slack's own ``<url|label>`` in model text gets the same rule
  (with a space in the label it is not an autolink, and shows as escaped text);
* lists use ``•``/``◦``/``▪`` per level (4 spaces of indent per level), ordered lists keep their
  numbers; block quotes get ``> `` on every line; tables become an aligned monospace block;
  ``---`` becomes a line of box-drawing characters; raw HTML is shown escaped, never interpreted;
* every piece of model text goes through :func:`bot.render.safety.escape`, and the result through
  :func:`bot.render.safety.defuse`, so nothing the model writes can mention or ping anyone.

Reference-style link definitions are switched off on purpose: a definition at the end of a long
answer would otherwise rewrite text far above it, which would break the stable streaming split.
Literal ``*``/``_``/``~`` in prose are left alone (mrkdwn has no escape for them).
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.render.links import deceives
from bot.render.safety import defuse, escape, escape_url

_md = (
    MarkdownIt("commonmark", {"html": True})
    .enable(["table", "strikethrough"])
    .disable(["reference"])
)

BULLETS = ("•", "◦", "▪")
INDENT = "    "
HR = "────────────"
TABLE_CELL_CAP = 32  # columns are padded to at most this width; longer cells just run on
LINK_SCHEMES = ("http://", "https://", "mailto:")


@lru_cache(maxsize=512)
def to_mrkdwn(markdown: str) -> str:
    """Convert Markdown to Slack mrkdwn (pure; safe against mentions)."""
    root = SyntaxTreeNode(_md.parse(markdown))
    return defuse("\n\n".join(b for b in (_block(node) for node in root.children) if b))


# --- blocks -------------------------------------------------------------------------------------


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline_of(node)
    if kind == "heading":
        text = _inline_of(node, bold=True).strip()
        return f"*{text}*" if text else ""
    if kind in ("fence", "code_block"):
        return _code(node.content)
    if kind in ("bullet_list", "ordered_list"):
        return "\n".join(_list_lines(node, 0))
    if kind == "blockquote":
        inner = "\n".join(b for b in (_block(c) for c in node.children) if b)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind == "hr":
        return HR
    if kind == "html_block":
        return escape(node.content.rstrip("\n"))
    if kind == "table":
        return _table(node)
    # Anything this parser setup cannot produce still shows its text rather than vanishing.
    return "\n".join(b for b in (_block(c) for c in node.children) if b) or escape(node.content)


def _code(content: str) -> str:
    body = content[:-1] if content.endswith("\n") else content
    # A literal ``` inside the code would close Slack's block early; a zero-width space keeps it.
    body = body.replace("```", "``\u200b`")
    return f"```\n{escape(body)}\n```" if body else "```\n```"


def _list_lines(node: SyntaxTreeNode, depth: int) -> list[str]:
    ordered = node.type == "ordered_list"
    number = int(node.attrs.get("start", 1)) if ordered else 0
    lines: list[str] = []
    for item in node.children:
        marker = f"{number}." if ordered else BULLETS[min(depth, len(BULLETS) - 1)]
        number += 1
        lead = INDENT * depth + marker + " "
        hang = INDENT * depth + " " * (len(marker) + 1)
        first = True
        for child in item.children:
            if child.type in ("bullet_list", "ordered_list"):
                if first:
                    lines.append(lead.rstrip())
                    first = False
                lines.extend(_list_lines(child, depth + 1))
                continue
            text = _block(child)
            if not text:
                continue
            if child.type in ("fence", "code_block", "table"):
                if first:
                    lines.append(lead.rstrip())
                    first = False
                lines.extend(text.split("\n"))  # code stays at column 0 so Slack sees the fence
                continue
            for line in text.split("\n"):
                lines.append((lead if first else hang) + line)
                first = False
        if first:  # an empty item
            lines.append(lead.rstrip())
    return lines


def _table(node: SyntaxTreeNode) -> str:
    rows: list[list[str]] = []
    for section in node.children:  # thead, tbody
        for tr in section.children:
            rows.append([_plain_of(cell).replace("\n", " ").strip() for cell in tr.children])
    if not rows:
        return ""
    columns = max(len(r) for r in rows)
    for row in rows:
        row.extend([""] * (columns - len(row)))
    widths = [min(max(len(r[c]) for r in rows), TABLE_CELL_CAP) for c in range(columns)]

    def line(cells: list[str]) -> str:
        return " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(rows[0]), "-+-".join("-" * max(w, 1) for w in widths)]
    out.extend(line(r) for r in rows[1:])
    return _code("\n".join(out))


# --- inline -------------------------------------------------------------------------------------


def _inline_of(node: SyntaxTreeNode, *, bold: bool = False) -> str:
    return "".join(_inline(child, bold) for child in node.children)


def _inline(node: SyntaxTreeNode, bold: bool) -> str:
    kind = node.type
    if kind == "inline":
        return _inline_of(node, bold=bold)
    if kind == "text":
        return escape(node.content)
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "code_inline":
        return f"`{escape(node.content)}`"
    if kind == "strong":
        inner = _inline_of(node, bold=True)
        return inner if bold or not inner else f"*{inner}*"
    if kind == "em":
        inner = _inline_of(node, bold=bold)
        return f"_{inner}_" if inner else ""
    if kind == "s":
        inner = _inline_of(node, bold=bold)
        return f"~{inner}~" if inner else ""
    if kind == "link":
        if node.markup == "autolink":
            return _autolink(str(node.attrs.get("href", "")), _plain_of(node))
        return _link(str(node.attrs.get("href", "")), _plain_of(node), False)
    if kind == "image":
        return _link(str(node.attrs.get("src", "")), _plain_of(node), False)
    if kind == "html_inline":
        return escape(node.content)
    return _inline_of(node, bold=bold) if node.children else escape(node.content)


def _autolink(href: str, raw: str) -> str:
    """``<url>``; Slack's ``<url|label>`` written by the model is read as what it means."""
    url, bar, label = raw.partition("|")
    if not bar:
        return _link(href, raw, True)
    href = _md.normalizeLink(url)
    if not _md.validateLink(href):
        return escape(raw)
    return _link(href, label, False)


def _link(href: str, label: str, autolink: bool) -> str:
    if not href.lower().startswith(LINK_SCHEMES):
        if not label:
            return escape(href)
        return escape(label) if label == href else f"{escape(label)} ({escape(href)})"
    url = escape_url(href)
    if autolink or not label or label == href:
        return f"<{url}>"
    if deceives(label, href):
        return f"{escape(label.strip())} (<{url}>)"
    return f"<{url}|{escape(label)}>"


def _plain_of(node: SyntaxTreeNode) -> str:
    """The text a reader sees in a node, without markup (link labels, table cells)."""
    parts: list[str] = []
    for child in node.children:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        else:
            parts.append(_plain_of(child))
    return "".join(parts)
